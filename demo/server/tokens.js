// Demo tokens: HS256 JWTs for the demo's users (role `authenticated`, `sub` =
// the user), signed with the sidecar's secret. A real app gets them from its
// identity provider; the demo's "login" is picking a name.
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const USERS = ['alice', 'bob'];

const b64url = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** A token for `sub`, valid `ttlS` seconds. */
export function signToken(sub, secret, ttlS = 300) {
  const exp = Math.floor(Date.now() / 1000) + ttlS;
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub, role: 'authenticated', exp })}`;
  return { token: `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`, exp };
}

/** The secret: SHAPESYNC_JWT_SECRET, or the file `make run` wrote. */
export function loadSecret(file) {
  if (process.env.SHAPESYNC_JWT_SECRET) return process.env.SHAPESYNC_JWT_SECRET;
  return readFileSync(file, 'utf8').trim();
}

/**
 * Connect-style middleware for GET /api/token?user=NAME: {"token", "exp"}.
 * Unknown users get 404. `ttlS` is short on purpose: the app refreshes on 401.
 */
export function tokenMiddleware(getSecret, ttlS = 300) {
  return (req, res, next) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname !== '/api/token') return next();
    const user = url.searchParams.get('user');
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('Cache-Control', 'no-store');
    if (!USERS.includes(user)) {
      res.statusCode = 404;
      return res.end(JSON.stringify({ message: `no such demo user: ${user}` }));
    }
    const ttl = Number(url.searchParams.get('ttl') ?? ttlS);
    res.end(JSON.stringify(signToken(user, getSecret(), Number.isFinite(ttl) ? ttl : ttlS)));
  };
}
