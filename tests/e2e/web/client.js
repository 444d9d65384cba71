// A tiny gRPC-web client for the meshgram edge: no build step, no dependencies, only `fetch`.
//
// It speaks the binary gRPC-web protocol (application/grpc-web+proto): every request is one
// protobuf message in a data frame (flag byte 0x00, 4-byte big-endian length, payload); a response
// is data frames followed by one trailer frame (flag 0x80) whose payload is
// "grpc-status:0\r\ngrpc-message:...\r\n". An error without a body ("trailers-only") carries
// grpc-status and grpc-message as HTTP headers instead, which the edge's CORS policy exposes.
//
// Sessions live in the browser: Login, RefreshToken and Logout include credentials, so the browser
// stores the refresh-token cookie that the edge sets and sends it back; the page never holds a
// refresh token. Other calls leave cookies out, so the token travels only where it is used.
//
// Only what the pages need is encoded: messages whose fields are strings or booleans.

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

// Canonical gRPC status codes, by number.
export const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

const UNKNOWN = 2;
const INTERNAL = 13;

// Status of a failed call: the gRPC code and message from the trailers.
export class GrpcError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "GrpcError";
    this.code = code;
    this.codeName = CODE_NAMES[code] ?? `CODE_${code}`;
  }
}

// The call never got an answer the page may read: the edge is down, or CORS refused this origin.
export class NetworkError extends Error {
  constructor(cause) {
    super(String(cause?.message ?? cause));
    this.name = "NetworkError";
  }
}

// ---------------------------------------------------------------------------------------------
// Protobuf wire format

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

function pushVarint(out, value) {
  while (value > 0x7f) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
}

// Encode a message whose fields are strings or booleans: `fields` maps field numbers to values.
// Empty strings and false are left out, as proto3 never writes a field that holds its default.
export function encodeMessage(fields) {
  const out = [];
  for (const [number, value] of Object.entries(fields)) {
    if (!value) continue;
    if (typeof value === "boolean") {
      pushVarint(out, (Number(number) << 3) | VARINT);
      out.push(1);
      continue;
    }
    const bytes = encoder.encode(value);
    pushVarint(out, (Number(number) << 3) | LEN);
    pushVarint(out, bytes.length);
    for (const byte of bytes) out.push(byte);
  }
  return Uint8Array.from(out);
}

// Read the varint at `pos`; returns [value, next position]. Values above 2^53 lose precision,
// which only matters for numbers this client skips anyway.
function readVarint(bytes, pos) {
  let value = 0;
  for (let shift = 0; shift < 70; shift += 7) {
    if (pos >= bytes.length) throw new Error("truncated varint");
    const byte = bytes[pos++];
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, pos];
  }
  throw new Error("varint longer than 10 bytes");
}

function advance(bytes, pos, count) {
  const next = pos + count;
  if (next > bytes.length) throw new Error("truncated field");
  return next;
}

// Walk the fields of a message, calling visit(number, wireType, value) for every varint (the
// number) and length-delimited field (the payload), and skipping every other wire type (fixed
// 64/32-bit, and the deprecated groups, nested).
function eachField(bytes, visit, pos = 0, group = null) {
  while (pos < bytes.length) {
    let key;
    [key, pos] = readVarint(bytes, pos);
    const number = Math.floor(key / 8);
    const wireType = key % 8;
    if (number === 0) throw new Error("field number 0");
    switch (wireType) {
      case VARINT: {
        let value;
        [value, pos] = readVarint(bytes, pos);
        if (visit) visit(number, wireType, value);
        break;
      }
      case I64:
        pos = advance(bytes, pos, 8);
        break;
      case LEN: {
        let length;
        [length, pos] = readVarint(bytes, pos);
        const end = advance(bytes, pos, length);
        if (visit) visit(number, wireType, bytes.subarray(pos, end));
        pos = end;
        break;
      }
      case SGROUP:
        // A group's fields are not this message's fields: skip them without visiting.
        pos = eachField(bytes, null, pos, number);
        break;
      case EGROUP:
        if (number !== group) throw new Error("unexpected end of group");
        return pos;
      case I32:
        pos = advance(bytes, pos, 4);
        break;
      default:
        throw new Error(`unknown wire type ${wireType}`);
    }
  }
  if (group !== null) throw new Error("unterminated group");
  return pos;
}

// The embedded message in field `number`. A message field that occurs several times is merged,
// and merging protobuf messages is concatenating their encodings.
export function messageField(bytes, number) {
  const parts = [];
  eachField(bytes, (n, wireType, payload) => {
    if (n === number && wireType === LEN) parts.push(payload);
  });
  const merged = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    merged.set(part, offset);
    offset += part.length;
  }
  return merged;
}

// The string in field `number` ("" when absent; the last occurrence wins).
export function stringField(bytes, number) {
  let value = "";
  eachField(bytes, (n, wireType, payload) => {
    if (n === number && wireType === LEN) value = decoder.decode(payload);
  });
  return value;
}

// The varint in field `number` (0 when absent; the last occurrence wins): ints, enums, bools.
export function varintField(bytes, number) {
  let value = 0;
  eachField(bytes, (n, wireType, varint) => {
    if (n === number && wireType === VARINT) value = varint;
  });
  return value;
}

// ---------------------------------------------------------------------------------------------
// gRPC-web framing

export function frame(message) {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length); // big-endian; flag byte stays 0x00
  framed.set(message, 5);
  return framed;
}

// Split a response body into its data messages and its trailers (lower-case keys).
export function unframe(body) {
  const messages = [];
  const trailers = new Map();
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let pos = 0;
  while (pos < body.length) {
    if (pos + 5 > body.length) throw new Error("truncated frame header");
    const flag = body[pos];
    const length = view.getUint32(pos + 1);
    const payload = body.subarray(pos + 5, advance(body, pos + 5, length));
    pos += 5 + length;
    if (flag & 0x80) {
      for (const line of new TextDecoder().decode(payload).split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0) {
          trailers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
      }
    } else if (flag & 0x01) {
      throw new Error("compressed frames are not supported");
    } else {
      messages.push(payload);
    }
  }
  return { messages, trailers };
}

// grpc-message is percent-encoded (RFC 3986 unreserved characters stay as they are).
function decodeMessage(text) {
  try {
    return decodeURIComponent(text ?? "");
  } catch {
    return text ?? "";
  }
}

// How the gRPC-web spec maps an HTTP failure without a gRPC status to a code.
function codeFromHttp(status) {
  return (
    { 400: INTERNAL, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14 }[status] ??
    UNKNOWN
  );
}

// Call one unary method; returns the response message's bytes or throws GrpcError/NetworkError.
// With `withCookies` the browser sends its cookies for the edge and stores those the answer
// sets; a cross-origin answer counts only if the edge's CORS policy allows credentials.
export async function unary(edge, method, request, options = {}) {
  const { accessToken = null, withCookies = false } = options;
  const headers = {
    "content-type": "application/grpc-web+proto",
    "x-grpc-web": "1",
    "x-user-agent": "meshgram-e2e",
  };
  if (accessToken) headers.authorization = `Bearer ${accessToken}`;
  let response;
  try {
    response = await fetch(`${edge}/${method}`, {
      method: "POST",
      mode: "cors",
      credentials: withCookies ? "include" : "same-origin",
      headers,
      body: frame(request),
    });
  } catch (error) {
    throw new NetworkError(error);
  }
  // Trailers-only answer: the status is in the headers and the body is empty.
  const headerStatus = response.headers.get("grpc-status");
  if (headerStatus !== null) {
    const code = Number(headerStatus);
    if (code !== 0) throw new GrpcError(code, decodeMessage(response.headers.get("grpc-message")));
  }
  if (!response.ok) {
    throw new GrpcError(codeFromHttp(response.status), `HTTP ${response.status}`);
  }
  const { messages, trailers } = unframe(new Uint8Array(await response.arrayBuffer()));
  const status = trailers.get("grpc-status") ?? headerStatus;
  if (status === null || status === undefined) {
    throw new GrpcError(INTERNAL, "response ended without a grpc-status");
  }
  if (Number(status) !== 0) {
    throw new GrpcError(Number(status), decodeMessage(trailers.get("grpc-message")));
  }
  if (messages.length !== 1) {
    throw new GrpcError(INTERNAL, `expected one response message, got ${messages.length}`);
  }
  return messages[0];
}

// ---------------------------------------------------------------------------------------------
// The calls of the pages

// AuthService.Register; returns RegisterResponse.account.username.
export async function register(edge, { email, username, password }) {
  // RegisterRequest: email = 1, username = 2, password = 3.
  const reply = await unary(
    edge,
    "meshgram.auth.v1.AuthService/Register",
    encodeMessage({ 1: email, 2: username, 3: password }),
  );
  // RegisterResponse.account = 1 -> Account.username = 3.
  return stringField(messageField(reply, 1), 3);
}

// A TokenPair message as an object. A browser gets an empty refreshToken and
// refreshTokenInCookie true: the token went into the cookie.
function tokenPair(bytes) {
  // TokenPair: access_token = 1, expires_in = 3, refresh_token = 4, refresh_expires_in = 5,
  // refresh_token_in_cookie = 6, session_id = 7.
  return {
    accessToken: stringField(bytes, 1),
    expiresIn: varintField(bytes, 3),
    refreshToken: stringField(bytes, 4),
    refreshExpiresIn: varintField(bytes, 5),
    refreshTokenInCookie: varintField(bytes, 6) === 1,
    sessionId: stringField(bytes, 7),
  };
}

// AuthService.Login; returns LoginResponse.tokens. With rememberMe the cookie outlives the
// browser; without it the browser drops the cookie when it closes.
export async function login(edge, { email, password, rememberMe = false }) {
  // LoginRequest: email = 1, password = 2, remember_me = 3.
  const reply = await unary(
    edge,
    "meshgram.auth.v1.AuthService/Login",
    encodeMessage({ 1: email, 2: password, 3: rememberMe }),
    { withCookies: true },
  );
  // LoginResponse.tokens = 1.
  return tokenPair(messageField(reply, 1));
}

// AuthService.RefreshToken with no token in the request: the edge reads the browser's cookie and
// sets its successor. Returns RefreshTokenResponse.tokens.
export async function refreshSession(edge) {
  const reply = await unary(
    edge,
    "meshgram.auth.v1.AuthService/RefreshToken",
    new Uint8Array(0),
    { withCookies: true },
  );
  // RefreshTokenResponse.tokens = 1.
  return tokenPair(messageField(reply, 1));
}

// AuthService.Logout with no token in the request: ends the session of the browser's cookie and
// clears the cookie.
export async function logout(edge) {
  await unary(edge, "meshgram.auth.v1.AuthService/Logout", new Uint8Array(0), {
    withCookies: true,
  });
}

// UserService.GetMyProfile; returns GetMyProfileResponse.profile.username.
export async function getMyProfileUsername(edge, accessToken) {
  // GetMyProfileRequest has no fields: its encoding is empty.
  const reply = await unary(
    edge,
    "meshgram.user.v1.UserService/GetMyProfile",
    new Uint8Array(0),
    { accessToken },
  );
  // GetMyProfileResponse.profile = 1 -> Profile.username = 2.
  return stringField(messageField(reply, 1), 2);
}

// Register, log in and read the new account's profile; returns what each step answered.
export async function signUpAndLoadProfile(edge, credentials) {
  const registered = await register(edge, credentials);
  const { accessToken } = await login(edge, credentials);
  const profileUsername = await getMyProfileUsername(edge, accessToken);
  return { registered, profileUsername };
}
