// JWTs for the auth tests, made with node:crypto only: HS256 (an HMAC over
// header.payload), RS256 (an RSA key pair), and deliberately broken ones.
import { createHmac, createSign, generateKeyPairSync } from 'node:crypto';

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
export const now = () => Math.floor(Date.now() / 1000);

/** A compact JWS of `claims` HMAC-signed with `secret` (alg HS256 unless `header` says otherwise). */
export function signHS256(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const input = `${b64url(header)}.${b64url(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** An RSA key pair: { privateKey, publicPem }. */
export function rsaKeyPair() {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }), publicKey };
}

/** A compact JWS of `claims` signed RS256 with `privateKey`. */
export function signRS256(claims, privateKey, header = { alg: 'RS256', typ: 'JWT' }) {
  const input = `${b64url(header)}.${b64url(claims)}`;
  const sig = createSign('RSA-SHA256').update(input).sign(privateKey).toString('base64url');
  return `${input}.${sig}`;
}

/** An unsigned token ("alg": "none"). */
export function unsigned(claims) {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`;
}
