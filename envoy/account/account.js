// The page behind the links in auth_svc's mails: /account/verify-email#token=... and
// /account/reset-password#token=... (the reset page without a token asks for a link instead).
//
// * The token is in the URL's fragment, which browsers never send, so it reaches no server log.
//   It is read once and removed from the address bar at once, so that it stays out of the
//   history, bookmarks and copied links; from then on it lives in one variable only. Neither
//   the token nor a password is ever logged or stored.
// * Nothing is sent when the page loads: mail scanners open links to look at them, and must not
//   use up the token (or verify an address nobody read). The reader presses a button first.
// * Server text is shown with textContent only, never parsed as HTML.

const INVALID_TOKEN = "ACCOUNT_TOKEN_INVALID";
const BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest";
const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";

const INVALID_LINK =
  "This link is invalid or expired: each link works once. Ask for a new one below.";
const UNREACHABLE = "meshgram could not be reached. Check your connection and try again.";

// How a field violation names its field (proto or JSON name), to start a sentence.
const FIELD_LABELS = {
  new_password: "The new password",
  newPassword: "The new password",
  email: "The email address",
};

let token = new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
if (window.location.hash) {
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
}

const element = (id) => document.getElementById(id);
const status = element("status");

// Say what happened; data-state lets the style sheet (and tests) tell the outcomes apart.
function report(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

// Show problems as a list under a form, or hide the list when there are none.
function listProblems(list, problems) {
  list.replaceChildren(
    ...problems.map((problem) => {
      const item = document.createElement("li");
      item.textContent = problem;
      return item;
    }),
  );
  list.hidden = problems.length === 0;
}

// POST body to a REST method of AuthService on this edge. The outcome is one of
// {kind: "ok", body}, {kind: "invalid"} (the token is unknown, used or expired),
// {kind: "rejected", problems} (field violations) or {kind: "error"}; all but "ok" have a text
// to show.
async function call(method, body) {
  let response;
  try {
    response = await fetch(`/v1/auth:${method}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
      // No call here needs the sign-in cookie; a token alone decides.
      credentials: "omit",
    });
  } catch {
    return { kind: "error", text: UNREACHABLE };
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status alone decides.
  }
  if (response.ok) {
    return { kind: "ok", body: answer || {} };
  }
  const details = answer && Array.isArray(answer.details) ? answer.details : [];
  const reasons = details.filter((d) => d["@type"] === ERROR_INFO).map((d) => d.reason);
  const violations = details
    .filter((d) => d["@type"] === BAD_REQUEST)
    .flatMap((d) => d.fieldViolations || []);
  if (reasons.includes(INVALID_TOKEN) || violations.some((v) => v.field === "token")) {
    return { kind: "invalid", text: INVALID_LINK };
  }
  if (response.status === 400 && violations.length > 0) {
    const problems = violations.map(
      (v) => `${FIELD_LABELS[v.field] || v.field} ${v.description}`.trim(),
    );
    return { kind: "rejected", problems, text: problems.join(" ") };
  }
  if (response.status === 429) {
    return { kind: "error", text: "Too many attempts. Wait a minute, then try again." };
  }
  if (response.status >= 500) {
    // The message would be about the mesh's insides; the reader can only wait.
    const text = `meshgram cannot answer right now (HTTP ${response.status}). Try again soon.`;
    return { kind: "error", text };
  }
  const said = answer && typeof answer.message === "string" ? ` (${answer.message})` : "";
  return {
    kind: "error",
    text: `Something went wrong: HTTP ${response.status}${said}. Try again later.`,
  };
}

// The form that mails a new link to an address, sent with method (resendVerificationEmail or
// requestPasswordReset); both answer the same whether or not the address is registered.
function offerNewLink(method, title, hint, sent) {
  const form = element("request-form");
  const button = element("request-button");
  const problems = element("request-problems");
  element("request-title").textContent = title;
  element("request-hint").textContent = hint;
  element("request").hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = element("email").value.trim();
    if (!email) {
      listProblems(problems, ["Enter the email address of your account."]);
      return;
    }
    listProblems(problems, []);
    button.disabled = true;
    report("pending", "Sending…");
    const outcome = await call(method, { email });
    button.disabled = false;
    if (outcome.kind === "ok") {
      element("request").hidden = true;
      report("sent", sent(email));
    } else if (outcome.kind === "rejected") {
      listProblems(problems, outcome.problems);
      report("rejected", "Please check the address.");
    } else {
      report("error", outcome.text);
    }
  });
}

function verifyEmail() {
  const newLink = () =>
    offerNewLink(
      "resendVerificationEmail",
      "Ask for a new link",
      "Enter the address of your account to get a new confirmation link.",
      (email) =>
        `If ${email} belongs to an account that is not verified yet, a new link is on its way.`,
    );
  if (!token) {
    report("invalid", "This link has no token. Open the one in your mail again, or ask below.");
    newLink();
    return;
  }
  const section = element("verify");
  const button = element("verify-button");
  section.hidden = false;
  button.addEventListener("click", async () => {
    button.disabled = true;
    report("pending", "Verifying…");
    const outcome = await call("verifyEmail", { token });
    if (outcome.kind === "ok") {
      token = "";
      section.hidden = true;
      const email = outcome.body.account && outcome.body.account.email;
      report("ok", `${email || "Your email address"} is verified. You can close this page.`);
    } else if (outcome.kind === "invalid") {
      token = "";
      section.hidden = true;
      report("invalid", outcome.text);
      newLink();
    } else {
      button.disabled = false;
      report("error", outcome.text);
    }
  });
}

function resetPassword() {
  const newLink = () =>
    offerNewLink(
      "requestPasswordReset",
      "Reset your password",
      "Enter the address of your account to get a link for choosing a new password.",
      (email) => `If ${email} belongs to an account, a mail with a link is on its way.`,
    );
  if (!token) {
    // The mails' "reset it here" link: no token yet, ask for one.
    newLink();
    return;
  }
  const section = element("reset");
  const form = element("reset-form");
  const button = element("reset-button");
  const password = element("new-password");
  const confirmation = element("confirm-password");
  const problems = element("reset-problems");
  const forget = () => {
    password.value = "";
    confirmation.value = "";
  };
  section.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!password.value) {
      listProblems(problems, ["Enter a new password."]);
      return;
    }
    if (password.value !== confirmation.value) {
      listProblems(problems, ["The two passwords differ."]);
      return;
    }
    listProblems(problems, []);
    button.disabled = true;
    report("pending", "Setting your new password…");
    const outcome = await call("resetPassword", { token, newPassword: password.value });
    button.disabled = false;
    if (outcome.kind === "ok") {
      token = "";
      forget();
      section.hidden = true;
      report("ok", "Your password is changed and every session is signed out. Sign in again.");
    } else if (outcome.kind === "invalid") {
      token = "";
      forget();
      section.hidden = true;
      report("invalid", outcome.text);
      newLink();
    } else if (outcome.kind === "rejected") {
      listProblems(problems, outcome.problems);
      report("rejected", "Please choose another password.");
      password.focus();
    } else {
      report("error", outcome.text);
    }
  });
}

const PAGES = {
  "/account/verify-email": verifyEmail,
  "/account/reset-password": resetPassword,
};

const page = PAGES[window.location.pathname];
if (page) {
  page();
}
