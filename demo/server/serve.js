// The built demo (dist/) behind one origin, as an app would be deployed:
// static files, GET /api/token (demo tokens), and /v1/* proxied to shapesyncd
// (so the browser makes same-origin requests: no CORS preflight per POST).
// Used by the browser tests and the benchmark; `make demo` runs Vite's dev
// server with the same token endpoint and proxy instead.
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tokenMiddleware } from './tokens.js';

export const DIST = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'dist');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
};

/**
 * Start the server on 127.0.0.1:`port` (0: a free one).
 * @returns {Promise<{ url: string, close: () => Promise<void> }>}
 */
export function startDemoServer({ sidecarUrl, jwtSecret, port = 0, dist = DIST, tokenTtlS = 300 }) {
  const target = new URL(sidecarUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const tokens = tokenMiddleware(() => jwtSecret, tokenTtlS);

  const proxy = (req, res) => {
    const headers = { ...req.headers, host: target.host };
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent },
      (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    up.on('error', (e) => {
      if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ message: `shapesyncd unreachable: ${e.code ?? e.message}` }));
    });
    res.on('close', () => { if (!res.writableFinished) up.destroy(); });
    req.pipe(up);
  };

  const serveFile = async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = normalize(join(dist, path));
    if (!file.startsWith(dist)) {
      res.writeHead(403);
      return res.end();
    }
    let body;
    try {
      body = await readFile(file);
    } catch {
      file = join(dist, 'index.html'); // the app's own routes
      body = await readFile(file);
    }
    res.writeHead(200, {
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Cache-Control': file.includes(`${join(dist, 'assets')}`) ? 'public, max-age=31536000, immutable' : 'no-cache',
    });
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/v1/')) return proxy(req, res);
    tokens(req, res, () => {
      serveFile(req, res).catch((e) => {
        res.writeHead(500);
        res.end(String(e));
      });
    });
  });
  return new Promise((resolveStart, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      resolveStart({
        url: `http://127.0.0.1:${server.address().port}`,
        close: () => new Promise((r) => {
          server.closeAllConnections?.();
          agent.destroy();
          server.close(() => r());
        }),
      });
    });
  });
}
