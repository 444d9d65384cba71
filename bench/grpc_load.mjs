// Native gRPC load generator on Node's built-in http2 module (no npm packages).
//
// h2load sends one fixed body with fixed headers; this sends a different body or token per
// request. Usage: node bench/grpc_load.mjs PLAN.json. It writes one TSV line per measured request
// to plan.log and a JSON summary on stdout. bench/grpc_load.py writes the plan and reads both.
//
// Plan, common fields: url (http://host:port, h2c with prior knowledge), connections, streams
// (requests in flight per connection), seconds, warmup, log, mode.
//   mode "requests": path, headers {name: value}, bodies_b64 [protobuf bytes without the gRPC
//     frame prefix], order [indices into bodies_b64]; every request takes the next index of
//     order (one cursor shared by all, cycling).
//   mode "write-mix": write_share, bound_ms, clients [{token}] (exactly connections x streams).
//     Each in-flight slot owns one client and loops: with probability write_share it sets the
//     account's bio to a fresh value (UpdateMyProfile, update_mask ["bio"]), else it reads it
//     (GetMyProfile) and checks the bio against the last acknowledged write of that slot.
//   mode "refresh-chain": clients [{refresh_token}] (exactly connections x streams). Each slot
//     refreshes its client's session again and again (AuthService.RefreshToken), each time with
//     the refresh token the previous answer gave; the summary lists the last token of each
//     client (refresh_tokens), so that a later run can go on with them.
//
// Log line: start_epoch_us \t status \t latency_us \t kind \t stale, where status is the gRPC
// status (0 = OK; a code outside 0..16 counts as 2, UNKNOWN), 1000 + the HTTP status when that is
// not 200, or 2000 for a transport failure (stream or session error, the 10 s deadline, an answer
// without grpc-status); an OK read whose body does not decode counts as 13, INTERNAL, as gRPC
// clients do. kind is read or write; stale is -, within (read started at most bound_ms after the
// acknowledgement of the value it should have seen) or past.
//
// The generator shares the CPU with the system under test, so the per-request path avoids
// allocations it can do without: framed bodies and header objects are built once, stream
// listeners are shared functions that find their slot through a symbol, deadlines are checked by
// one sweeping timer, and log lines are buffered and written in 64 KiB blocks.

import fs from 'node:fs';
import http2 from 'node:http2';
import { performance } from 'node:perf_hooks';

const DEADLINE_MS = 10_000;
const DRAIN_MS = 5_000;
const REOPEN_MS = 100;
const SWEEP_MS = 100;
const LOG_FLUSH_CHARS = 1 << 16;
const TRANSPORT_ERROR = 2000;
const HTTP_ERROR_BASE = 1000;
const GRPC_UNKNOWN = 2;
const GRPC_INTERNAL = 13;
const READ = 0;
const WRITE = 1;
const SLOT = Symbol('slot');
const { NGHTTP2_CANCEL } = http2.constants;

function fail(message) {
  process.stderr.write(`grpc_load: ${message}\n`);
  process.exit(2);
}

function positiveInt(value, name) {
  if (!Number.isInteger(value) || value < 1) fail(`${name} must be a positive integer`);
  return value;
}

function nonNegative(value, name) {
  if (typeof value !== 'number' || !(value >= 0)) fail(`${name} must be a number >= 0`);
  return value;
}

// ---- protobuf, by hand ---------------------------------------------------------------------

function varintSize(n) {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

function writeVarint(buf, pos, n) {
  while (n >= 0x80) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[pos++] = n;
  return pos;
}

// One gRPC message: compressed flag 0, 4-byte big-endian length, the protobuf bytes.
function frame(message) {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

// google.protobuf.FieldMask { paths: ["bio"] }
const BIO_MASK = Buffer.from([0x0a, 3, 0x62, 0x69, 0x6f]);

// Framed UpdateMyProfileRequest { profile: { bio }, update_mask: { paths: ["bio"] } }.
function frameUpdateBio(bio) {
  const profileLen = 1 + varintSize(bio.length) + bio.length;
  const messageLen = 1 + varintSize(profileLen) + profileLen + 1 + 1 + BIO_MASK.length;
  const out = Buffer.allocUnsafe(5 + messageLen);
  out[0] = 0;
  out.writeUInt32BE(messageLen, 1);
  let pos = 5;
  out[pos++] = 0x0a; // field 1 (profile), length-delimited
  pos = writeVarint(out, pos, profileLen);
  out[pos++] = 0x22; // Profile field 4 (bio), length-delimited
  pos = writeVarint(out, pos, bio.length);
  pos += bio.copy(out, pos);
  out[pos++] = 0x12; // field 2 (update_mask), length-delimited
  out[pos++] = BIO_MASK.length;
  BIO_MASK.copy(out, pos);
  return out;
}

// Decoding returns positions through these module variables rather than allocating results.
let varintEnd = 0;
let bioStart = 0;
let bioEnd = 0;

// Reads a varint at pos (value exact up to 2^53); its end goes to varintEnd; -1 when malformed.
// A message whose only field is a string or bytes field number 1, framed.
function frameField1(value) {
  const message = Buffer.allocUnsafe(1 + varintSize(value.length) + value.length);
  message[0] = 0x0a;
  const pos = writeVarint(message, 1, value.length);
  value.copy(message, pos);
  return frame(message);
}

function readVarint(buf, pos, end) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10 && pos < end; i++) {
    const byte = buf[pos++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varintEnd = pos;
      return value;
    }
    scale *= 0x80;
  }
  return -1;
}

// Position after the field of wireType whose value starts at pos; -1 when malformed.
function skipField(buf, pos, end, wireType) {
  let next;
  switch (wireType) {
    case 0:
      if (readVarint(buf, pos, end) < 0) return -1;
      next = varintEnd;
      break;
    case 1:
      next = pos + 8;
      break;
    case 2: {
      const len = readVarint(buf, pos, end);
      if (len < 0) return -1;
      next = varintEnd + len;
      break;
    }
    case 5:
      next = pos + 4;
      break;
    default: // groups (3, 4) and invalid wire types
      return -1;
  }
  return next <= end ? next : -1;
}

// Finds profile.bio (field 4 in field 1) in a framed Get/UpdateMyProfileResponse or
// GetProfileResponse; sets bioStart/bioEnd (empty when absent; the last occurrence wins, as
// protobuf merging does) and returns false when the body does not decode.
function findBio(body) {
  bioStart = 0;
  bioEnd = 0;
  if (body === null || body.length < 5 || body[0] !== 0) return false;
  const end = 5 + body.readUInt32BE(1);
  if (end > body.length) return false;
  let pos = 5;
  while (pos < end) {
    const tag = readVarint(body, pos, end);
    if (tag < 0) return false;
    pos = varintEnd;
    if (tag === 0x0a) {
      const len = readVarint(body, pos, end);
      if (len < 0 || varintEnd + len > end) return false;
      const innerEnd = varintEnd + len;
      pos = varintEnd;
      while (pos < innerEnd) {
        const innerTag = readVarint(body, pos, innerEnd);
        if (innerTag < 0) return false;
        pos = varintEnd;
        if (innerTag === 0x22) {
          const bioLen = readVarint(body, pos, innerEnd);
          if (bioLen < 0 || varintEnd + bioLen > innerEnd) return false;
          bioStart = varintEnd;
          bioEnd = varintEnd + bioLen;
          pos = bioEnd;
        } else {
          pos = skipField(body, pos, innerEnd, innerTag & 7);
          if (pos < 0) return false;
        }
      }
    } else {
      pos = skipField(body, pos, end, tag & 7);
      if (pos < 0) return false;
    }
  }
  return true;
}

function bioIs(body, value) {
  const len = bioEnd - bioStart;
  if (len !== value.length) return false;
  for (let i = 0; i < len; i++) if (body[bioStart + i] !== value[i]) return false;
  return true;
}

// ---- plan ----------------------------------------------------------------------------------

if (process.argv.length !== 3) fail('usage: node grpc_load.mjs PLAN.json');
let plan;
try {
  plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
} catch (error) {
  fail(`cannot read the plan: ${error.message}`);
}

let target;
try {
  target = new URL(plan.url);
} catch {
  fail(`url is not a URL: ${plan.url}`);
}
if (target.protocol !== 'http:') fail('url must be http:// (gRPC over h2c, prior knowledge)');
const connections = positiveInt(plan.connections, 'connections');
const streams = positiveInt(plan.streams, 'streams');
const seconds = nonNegative(plan.seconds, 'seconds');
const warmup = nonNegative(plan.warmup, 'warmup');
if (typeof plan.log !== 'string' || plan.log === '') fail('log must be a file path');
const writeMix = plan.mode === 'write-mix';
const refreshChain = plan.mode === 'refresh-chain';
if (!writeMix && !refreshChain && plan.mode !== 'requests') {
  fail('mode must be "requests", "write-mix" or "refresh-chain"');
}
// Both modes read their answers' bodies.
const readsBodies = writeMix || refreshChain;

function grpcHeaders(path, extra) {
  const headers = {
    ':method': 'POST',
    ':scheme': 'http',
    ':authority': target.host,
    ':path': path,
    'content-type': 'application/grpc',
    te: 'trailers',
  };
  for (const [name, value] of Object.entries(extra)) headers[name.toLowerCase()] = String(value);
  return headers;
}

let sharedHeaders = null;
let bodies = null;
let order = null;
let orderCursor = 0;
let writeShare = 0;
let boundMs = 0;
let clients = null;
if (refreshChain) {
  clients = plan.clients;
  if (!Array.isArray(clients) || clients.length !== connections * streams) {
    fail('clients must list exactly connections x streams clients');
  }
} else if (writeMix) {
  writeShare = nonNegative(plan.write_share, 'write_share');
  if (writeShare > 1) fail('write_share must be between 0 and 1');
  boundMs = nonNegative(plan.bound_ms, 'bound_ms');
  clients = plan.clients;
  if (!Array.isArray(clients) || clients.length !== connections * streams) {
    fail('clients must list exactly connections x streams clients');
  }
} else {
  if (typeof plan.path !== 'string' || !plan.path.startsWith('/')) fail('path must start with /');
  sharedHeaders = grpcHeaders(plan.path, plan.headers ?? {});
  if (!Array.isArray(plan.bodies_b64) || plan.bodies_b64.length === 0) {
    fail('bodies_b64 must be a non-empty list');
  }
  bodies = plan.bodies_b64.map((b64) => frame(Buffer.from(b64, 'base64')));
  if (!Array.isArray(plan.order) || plan.order.length === 0) fail('order must be a non-empty list');
  order = Int32Array.from(plan.order);
  for (let i = 0; i < order.length; i++) {
    if (order[i] !== plan.order[i] || order[i] < 0 || order[i] >= bodies.length) {
      fail(`order[${i}] is not an index into bodies_b64`);
    }
  }
}
const EMPTY_MESSAGE = frame(Buffer.alloc(0));
const READ_PATH = '/meshgram.user.v1.UserService/GetMyProfile';
const WRITE_PATH = '/meshgram.user.v1.UserService/UpdateMyProfile';
const REFRESH_PATH = '/meshgram.auth.v1.AuthService/RefreshToken';
// Written values are unique across runs too, so a bio left by an earlier run never matches.
const runTag = Math.floor(Math.random() * 36 ** 6).toString(36);

// ---- log and counters ----------------------------------------------------------------------

const logFd = fs.openSync(plan.log, 'w');
let logText = '';
const totals = { requests: 0, ok: 0, failed: 0, reads: 0, writes: 0, within: 0, past: 0 };

function record(start, status, latencyMs, kind, stale) {
  const epochUs = Math.round((performance.timeOrigin + start) * 1000);
  const kindName = kind === WRITE ? 'write' : 'read';
  logText += `${epochUs}\t${status}\t${Math.round(latencyMs * 1000)}\t${kindName}\t${stale}\n`;
  if (logText.length >= LOG_FLUSH_CHARS) {
    fs.writeSync(logFd, logText);
    logText = '';
  }
  totals.requests++;
  if (status === 0) totals.ok++;
  else totals.failed++;
  if (kind === WRITE) totals.writes++;
  else totals.reads++;
  if (stale === 'within') totals.within++;
  else if (stale === 'past') totals.past++;
}

// ---- connections and slots -----------------------------------------------------------------

class Conn {
  constructor() {
    this.session = null;
    this.waiting = []; // slots that found no usable session
    this.reopenTimer = null;
  }
}

class Slot {
  constructor(index, conn) {
    this.index = index;
    this.conn = conn;
    this.stream = null;
    this.kind = READ;
    this.startAt = 0;
    this.endAt = 0; // when the gRPC status arrived
    this.httpStatus = 0;
    this.grpcStatus = -1;
    this.errored = false;
    this.body = null;
    // write-mix
    this.readHeaders = null;
    this.writeHeaders = null;
    this.writePrefix = '';
    this.writeCount = 0;
    this.writeValue = null; // bio bytes of the write in flight
    this.ackValue = null; // bio bytes of the last acknowledged write
    this.ackAt = 0;
    // Writes that failed after the last acknowledged one: the server may have applied them, so
    // reading one of them is not stale.
    this.unsure = [];
    // refresh-chain: the refresh token the next request presents
    this.refreshToken = null;
  }
}

const conns = [];
const slots = [];
for (let c = 0; c < connections; c++) {
  const conn = new Conn();
  conns.push(conn);
  for (let s = 0; s < streams; s++) {
    const slot = new Slot(slots.length, conn);
    if (refreshChain) {
      const token = clients[slot.index]?.refresh_token;
      if (typeof token !== 'string' || token === '') {
        fail(`clients[${slot.index}].refresh_token is missing`);
      }
      slot.refreshToken = Buffer.from(token);
      slot.readHeaders = grpcHeaders(REFRESH_PATH, {});
    } else if (writeMix) {
      const token = clients[slot.index]?.token;
      if (typeof token !== 'string' || token === '') {
        fail(`clients[${slot.index}].token is missing`);
      }
      const auth = { authorization: `Bearer ${token}` };
      slot.readHeaders = grpcHeaders(READ_PATH, auth);
      slot.writeHeaders = grpcHeaders(WRITE_PATH, auth);
      slot.writePrefix = `w-${runTag}-${slot.index}-`;
    }
    slots.push(slot);
  }
}

const sessions = new Set();
let busy = 0;
let stopping = false;
let finished = false;
const startedAt = performance.now();
const measureFrom = startedAt + warmup * 1000;
const measureUntil = measureFrom + seconds * 1000;

function openSession(conn) {
  const session = http2.connect(target.origin, {
    peerMaxConcurrentStreams: Math.max(100, streams),
  });
  sessions.add(session);
  conn.session = session;
  session.on('error', () => {}); // 'close' follows; the streams see their own errors
  session.on('goaway', () => retire(conn, session));
  session.on('close', () => {
    sessions.delete(session);
    retire(conn, session);
  });
}

// Stops giving new requests to session and opens its replacement after REOPEN_MS.
function retire(conn, session) {
  if (conn.session !== session) return;
  conn.session = null;
  if (finished || conn.reopenTimer !== null) return;
  conn.reopenTimer = setTimeout(() => {
    conn.reopenTimer = null;
    if (finished) return;
    openSession(conn);
    const waiting = conn.waiting;
    conn.waiting = [];
    for (const slot of waiting) issue(slot);
  }, REOPEN_MS);
}

function parseGrpcStatus(value) {
  const code = Number(value);
  return Number.isInteger(code) && code >= 0 && code <= 16 ? code : GRPC_UNKNOWN;
}

// Stream listeners: shared functions (no closures per request); `this` is the stream.
function onResponse(headers) {
  const slot = this[SLOT];
  if (slot.stream !== this) return;
  slot.httpStatus = headers[':status'];
  const grpc = headers['grpc-status']; // trailers-only answer
  if (grpc !== undefined) {
    slot.grpcStatus = parseGrpcStatus(grpc);
    slot.endAt = performance.now();
  }
}

function onTrailers(trailers) {
  const slot = this[SLOT];
  if (slot.stream !== this) return;
  const grpc = trailers['grpc-status'];
  if (grpc !== undefined) {
    slot.grpcStatus = parseGrpcStatus(grpc);
    slot.endAt = performance.now();
  }
}

function onData(chunk) {
  const slot = this[SLOT];
  if (slot.stream !== this) return;
  slot.body = slot.body === null ? chunk : Buffer.concat([slot.body, chunk]);
}

function onError() {
  const slot = this[SLOT];
  if (slot.stream === this) slot.errored = true;
}

function onClose() {
  const slot = this[SLOT];
  if (slot.stream === this) complete(slot);
}

function issue(slot) {
  const now = performance.now();
  if (now >= measureUntil) {
    stop();
    return;
  }
  const conn = slot.conn;
  const session = conn.session;
  if (session === null || session.closed || session.destroyed) {
    if (session !== null) retire(conn, session);
    conn.waiting.push(slot);
    return;
  }
  let headers;
  let body;
  if (refreshChain) {
    slot.kind = READ;
    headers = slot.readHeaders;
    body = frameField1(slot.refreshToken);
  } else if (writeMix) {
    if (Math.random() < writeShare) {
      slot.kind = WRITE;
      slot.writeValue = Buffer.from(slot.writePrefix + ++slot.writeCount);
      headers = slot.writeHeaders;
      body = frameUpdateBio(slot.writeValue);
    } else {
      slot.kind = READ;
      headers = slot.readHeaders;
      body = EMPTY_MESSAGE;
    }
  } else {
    headers = sharedHeaders;
    body = bodies[order[orderCursor]];
    orderCursor = orderCursor + 1 === order.length ? 0 : orderCursor + 1;
  }
  let stream;
  try {
    stream = session.request(headers);
  } catch {
    retire(conn, session);
    conn.waiting.push(slot);
    return;
  }
  slot.stream = stream;
  slot.startAt = now;
  slot.endAt = 0;
  slot.httpStatus = 0;
  slot.grpcStatus = -1;
  slot.errored = false;
  slot.body = null;
  busy++;
  stream[SLOT] = slot;
  stream.on('response', onResponse);
  stream.on('trailers', onTrailers);
  stream.on('error', onError);
  stream.on('close', onClose);
  if (readsBodies) stream.on('data', onData);
  else stream.resume(); // the body is not needed, but must be read for the stream to end
  stream.end(body);
}

function complete(slot) {
  const end = slot.endAt > 0 ? slot.endAt : performance.now();
  let status;
  if (slot.httpStatus !== 0 && slot.httpStatus !== 200) status = HTTP_ERROR_BASE + slot.httpStatus;
  else if (slot.grpcStatus >= 0) status = slot.grpcStatus;
  else status = TRANSPORT_ERROR; // reset, session lost, deadline, or no grpc-status at all
  slot.stream = null;
  busy--;
  let stale = '-';
  if (refreshChain && status === 0) {
    // RefreshTokenResponse.tokens (1) .refresh_token (4): the same place as a profile's bio.
    if (findBio(slot.body) && bioEnd > bioStart) {
      slot.refreshToken = Buffer.from(slot.body.subarray(bioStart, bioEnd));
    } else {
      status = GRPC_INTERNAL;
    }
  } else if (writeMix) {
    if (slot.kind === WRITE) {
      if (status === 0) {
        slot.ackValue = slot.writeValue;
        slot.ackAt = end;
        slot.unsure.length = 0;
      } else {
        slot.unsure.push(slot.writeValue);
      }
    } else if (status === 0) {
      if (!findBio(slot.body)) status = GRPC_INTERNAL;
      else if (slot.ackValue !== null && !bioIs(slot.body, slot.ackValue)) {
        let maybeApplied = false;
        for (const value of slot.unsure) if (bioIs(slot.body, value)) maybeApplied = true;
        if (!maybeApplied) stale = slot.startAt - slot.ackAt <= boundMs ? 'within' : 'past';
      }
    }
  }
  slot.body = null;
  if (slot.startAt >= measureFrom) {
    record(slot.startAt, status, end - slot.startAt, slot.kind, stale);
  }
  if (stopping) {
    if (busy === 0) finish();
  } else {
    issue(slot);
  }
}

function stop() {
  stopping = true;
  if (busy === 0) finish();
}

function sweep() {
  const now = performance.now();
  if (now >= measureUntil) {
    stopping = true;
    if (busy === 0 || now >= measureUntil + DRAIN_MS) {
      finish();
      return;
    }
  }
  for (const slot of slots) {
    const stream = slot.stream;
    if (stream !== null && slot.grpcStatus < 0 && now - slot.startAt > DEADLINE_MS) {
      stream.close(NGHTTP2_CANCEL); // its 'close' completes the slot as a transport error
    }
  }
}

function finish() {
  if (finished) return;
  finished = true;
  clearInterval(sweeper);
  const now = performance.now();
  for (const slot of slots) {
    const stream = slot.stream;
    if (stream === null) continue;
    // Still in flight DRAIN_MS after the end: a transport failure.
    slot.stream = null;
    busy--;
    if (slot.startAt >= measureFrom) {
      record(slot.startAt, TRANSPORT_ERROR, now - slot.startAt, slot.kind, '-');
    }
    stream.close(NGHTTP2_CANCEL);
  }
  for (const conn of conns) {
    if (conn.reopenTimer !== null) clearTimeout(conn.reopenTimer);
    conn.reopenTimer = null;
  }
  for (const session of sessions) session.destroy();
  if (logText !== '') fs.writeSync(logFd, logText);
  fs.closeSync(logFd);
  const summary = {
    requests: totals.requests,
    ok: totals.ok,
    failed: totals.failed,
    reads: totals.reads,
    writes: totals.writes,
    stale_within: totals.within,
    stale_past: totals.past,
    seconds,
  };
  if (refreshChain) summary.refresh_tokens = slots.map((slot) => slot.refreshToken.toString());
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  // Nothing should keep the process alive now; if something does, do not hang the caller.
  setTimeout(() => process.exit(0), 2_000).unref();
}

const sweeper = setInterval(sweep, SWEEP_MS);
for (const conn of conns) openSession(conn);
for (const slot of slots) issue(slot);
