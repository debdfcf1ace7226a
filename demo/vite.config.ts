// Vite for the demo. `npm run dev` (what `make demo` starts) serves the app
// with GET /api/token (demo tokens signed with `make run`'s secret) and
// proxies /v1/* to shapesyncd (SHAPESYNC_URL, default http://127.0.0.1:3000),
// so the browser only talks to one origin. The kit is used from its sources.
import { resolve } from 'node:path'
import react from '@vitejs/plugin-react'
import { defineConfig, type Plugin } from 'vite'
import { loadSecret, tokenMiddleware } from './server/tokens.js'

const root = resolve(__dirname, '..')
const sidecar = process.env.SHAPESYNC_URL ?? 'http://127.0.0.1:3000'

function demoTokens(): Plugin {
  const secret = () => loadSecret(resolve(root, '.shapesync', 'jwt-secret'))
  return {
    name: 'shapesync-demo-tokens',
    configureServer(server) {
      server.middlewares.use(tokenMiddleware(secret))
    },
    configurePreviewServer(server) {
      server.middlewares.use(tokenMiddleware(secret))
    },
  }
}

export default defineConfig({
  plugins: [react(), demoTokens()],
  resolve: {
    alias: { '@shapesync/react': resolve(root, 'clients/typescript/src/index.ts') },
  },
  server: {
    host: '127.0.0.1',
    port: Number(process.env.DEMO_PORT ?? 5173),
    strictPort: true,
    proxy: { '/v1': { target: sidecar, changeOrigin: true } },
  },
  preview: {
    host: '127.0.0.1',
    port: Number(process.env.DEMO_PORT ?? 5173),
    proxy: { '/v1': { target: sidecar, changeOrigin: true } },
  },
  build: { outDir: 'dist', sourcemap: true },
})
