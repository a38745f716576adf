// A real OpenID Provider for the console's sign-in tests: panva's certified oidc-provider
// (pinned in package.json), on loopback, with one confidential client (PKCE required) and
// four test people. Login is a one-field form (the person's login name); consent is given in
// the same step. Started by tests/console/harness.py; prints "READY <issuer>" when listening.
//
// Environment: OIDC_PORT, OIDC_REDIRECT_URI, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET.
import http from "node:http";
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;

const people = {
  ana: { name: "Ana Approver", email: "ana@example.com", roles: ["mission_ledger.approver"] },
  oscar: { name: "Oscar Operator", email: "oscar@example.com", roles: ["mission_ledger.operator"] },
  ada: { name: "Ada Admin", email: "ada@example.com", roles: ["mission_ledger.admin"] },
  bot: { name: "Agent Bot", email: "bot@example.com", roles: ["mission_ledger.agent"] },
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID,
      client_secret: process.env.OIDC_CLIENT_SECRET,
      redirect_uris: [process.env.OIDC_REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], profile: ["name", "roles"], email: ["email"] },
  cookies: { keys: ["console-tests-only"] },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const person = people[id];
    if (!person) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...person }; } };
  },
});

function page(uid, message) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test provider sign-in</title></head>
<body><main><h1>Test identity provider</h1>${message ? `<p role="alert">${message}</p>` : ""}
<form method="post" action="/interaction/${uid}/login">
<label for="login">Login name</label><input id="login" name="login" autofocus>
<button type="submit">Sign in</button></form></main></body></html>`;
}

function readForm(req) {
  return new Promise((resolve) => {
    let body = "";
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => resolve(new URLSearchParams(body)));
  });
}

const server = http.createServer(async (req, res) => {
  const match = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
  if (!match) return provider.callback()(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (!match[2]) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      return res.end(page(details.uid));
    }
    const login = (await readForm(req)).get("login") || "";
    if (!people[login]) {
      return provider.interactionFinished(req, res, {
        error: "access_denied", error_description: "unknown test user",
      }, { mergeWithLastSubmission: false });
    }
    const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, {
      login: { accountId: login }, consent: { grantId },
    }, { mergeWithLastSubmission: false });
  } catch (error) {
    res.writeHead(400, { "content-type": "text/plain" });
    return res.end(String(error));
  }
});

server.listen(port, "127.0.0.1", () => { console.log(`READY ${issuer}`); });
process.on("SIGTERM", () => { server.close(); process.exit(0); });
