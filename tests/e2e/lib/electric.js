// @electric-sql/client, as the tests use it: every test file imports the client
// from here, so that a test file's process ends by itself once its tests are
// done (Node 18 has no --test-force-exit).
//
// The client keeps a module-wide "up-to-date tracker" whose writes to
// localStorage are throttled to one a minute: after the second up-to-date
// within a minute it arms a 60 s timer (UpToDateTracker.scheduleSave) that is
// neither unref'd nor reachable from outside the module. Node has no
// localStorage, so the timer has nothing to write; it only keeps the process
// alive for a minute after the last test. Its timers are made not to hold the
// event loop (unref), recognised by their callback; every other timer is left
// alone.
import { promisify } from 'node:util';

const realSetTimeout = globalThis.setTimeout;
if (!realSetTimeout.shapesyncUnrefsTrackerSaves) {
  const patched = function setTimeout(fn, delay, ...args) {
    const t = realSetTimeout.call(this, fn, delay, ...args);
    if (typeof fn === 'function' && typeof t?.unref === 'function' &&
        fn.toString().includes('pendingSaveTimer')) {
      t.unref();
    }
    return t;
  };
  patched.shapesyncUnrefsTrackerSaves = true;
  patched[promisify.custom] = realSetTimeout[promisify.custom];
  globalThis.setTimeout = patched;
}

export * from '@electric-sql/client';
