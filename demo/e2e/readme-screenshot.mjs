// The README's picture of the demo: alice and bob side by side (two frames of
// one page), bob's conflict dialog open after an offline edit that crossed
// alice's. Writes demo/out/readme.png; copy it to docs/images/demo.png.
//
//   node demo/e2e/readme-screenshot.mjs   (after npm run build -w demo)
import { join } from 'node:path';
import { startDemo, OUT } from './harness.js';

const demo = await startDemo();
try {
  const { page } = await demo.openUser('alice');
  await page.setViewportSize({ width: 1400, height: 560 });
  await page.setContent(`<!doctype html><style>body{margin:0;display:flex;gap:4px;background:#cbd2d9}iframe{border:0;width:698px;height:560px;background:#fff}</style>
    <iframe id="a" src="${demo.server.url}/?user=alice&list=shared"></iframe><iframe id="b" src="${demo.server.url}/?user=bob&list=shared"></iframe>`);
  const frame = async (id) => (await page.waitForSelector(`#${id}`)).contentFrame();
  const a = await frame('a');
  const b = await frame('b');
  for (const f of [a, b]) await f.waitForSelector('[data-testid="status"][data-state="up-to-date"]', { timeout: 20_000 });
  await a.fill('[data-testid="new-title"]', 'Send the invitations');
  await a.click('button[data-action="add"]');
  await b.waitForSelector('[data-title="Send the invitations"]');
  const first = '[data-testid="todo"]:first-child';
  await b.check('[data-testid="offline"]');
  await b.dblclick(`${first} [data-action="edit"]`);
  await b.fill('[data-testid="edit-title"]', 'Plan the launch party (Friday)');
  await b.press('[data-testid="edit-title"]', 'Enter');
  await a.dblclick(`${first} [data-action="edit"]`);
  await a.fill('[data-testid="edit-title"]', 'Plan the launch party (Saturday)');
  await a.press('[data-testid="edit-title"]', 'Enter');
  await a.waitForSelector('[data-testid="status"][data-pending="0"]');
  await b.uncheck('[data-testid="offline"]');
  await b.waitForSelector('[data-testid="conflict"]', { timeout: 10_000 });
  await page.waitForTimeout(300);
  const path = join(OUT, 'readme.png');
  await page.screenshot({ path });
  console.log(path);
} finally {
  await demo.close();
}
