// What the test pages share: the edge named in their address, and how they show an outcome.
//
// #result shows the latest outcome; its data-state is idle, pending, ok, grpc-error,
// network-error or client-error, data-code holds a failed call's gRPC code, and an action may add
// more data-* attributes about what it got.

import { GrpcError, NetworkError } from "./client.js";

const result = document.getElementById("result");

// The edge from "?edge=http://host:port" without trailing slashes; "" when the address has none.
// A page shows it in #edge.
export function edgeFromAddress() {
  const edge = (new URLSearchParams(location.search).get("edge") ?? "").replace(/\/+$/, "");
  if (edge) document.getElementById("edge").textContent = edge;
  return edge;
}

// Show an outcome: its state, text and data-* details (replacing the previous outcome's).
export function show(state, text, details = {}) {
  for (const name of Object.keys(result.dataset)) delete result.dataset[name];
  Object.assign(result.dataset, details, { state });
  result.textContent = text;
}

// Show why an action failed.
export function showError(error) {
  if (error instanceof GrpcError) {
    const text = `gRPC error ${error.code} ${error.codeName}: ${error.message}`;
    show("grpc-error", text, { code: String(error.code) });
  } else if (error instanceof NetworkError) {
    const why = "edge unreachable or origin not allowed";
    show("network-error", `Network error (${why}): ${error.message}`);
  } else {
    show("client-error", `Client error: ${error}`);
  }
}

// Run an action with every button of the page disabled: show `pending`, then the text and
// details the action returns, or its error.
export async function perform(pending, action) {
  const buttons = [...document.querySelectorAll("button")];
  for (const button of buttons) button.disabled = true;
  show("pending", pending);
  try {
    const { text, details = {} } = await action();
    show("ok", text, details);
  } catch (error) {
    showError(error);
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}
