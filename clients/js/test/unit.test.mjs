// Pure parts of the client: backoff policy, close-code decisions, gap accounting.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, CLOSE_POLICY, SeqTracker, closePolicy } from "../broadcaster.js";

/** A deterministic random source that also records what it returned. */
function sequence(values) {
  const given = [];
  let i = 0;
  const random = () => {
    const r = values[i++ % values.length];
    given.push(r);
    return r;
  };
  return { random, given };
}

test("normal backoff: full jitter over a window that doubles up to the cap", () => {
  const { random } = sequence([0.5, 0.999, 0, 0.25]);
  const backoff = new Backoff({ minDelay: 100, maxDelay: 1000, factor: 2 }, random);
  const steps = Array.from({ length: 8 }, () => backoff.next());
  assert.deepEqual(
    steps.map((s) => s.attempt),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  const caps = steps.map((s) => backoff.cap(s.attempt));
  assert.deepEqual(caps, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  assert.deepEqual(
    steps.map((s) => s.delay),
    [50, 199.8, 0, 200, 500, 999, 0, 250],
  );
  backoff.reset();
  assert.equal(backoff.next().attempt, 0, "a connection that opened resets the window");
});

test("long backoff: never sooner than half of longDelay, or than Retry-After", () => {
  const { random } = sequence([0, 0.999]);
  const backoff = new Backoff({ minDelay: 1, longDelay: 30000 }, random);
  const a = backoff.next("long");
  const b = backoff.next("long");
  assert.equal(a.kind, "long");
  assert.equal(a.delay, 15000);
  assert.ok(b.delay >= 15000 && b.delay < 30000);
  const c = backoff.next("long", 60000);
  assert.equal(c.delay, 60000, "Retry-After is the floor");
  assert.equal(backoff.next().attempt, 3, "long waits count as attempts: the window keeps growing");
});

test("close codes: no reconnect after 1000 and 1008, long after 4008 1013 4029", () => {
  assert.equal(closePolicy(1000), "none");
  assert.equal(closePolicy(1008), "none");
  for (const code of [4008, 1013, 4029]) assert.equal(closePolicy(code), "long");
  for (const code of [1001, 1006, 1009, 1011, 4000]) assert.equal(closePolicy(code), "normal");
  assert.ok(Object.isFrozen(CLOSE_POLICY));
});

test("gap accounting: exact missed counts, duplicates dropped, new epoch forgets", () => {
  const t = new SeqTracker();
  assert.equal(t.resumeFrom(), null);
  assert.deepEqual(t.subscribed({ channel: "c", seq: 10, epoch: "e1", strategy: "drop-oldest" }, null), {
    gap: null,
    reset: null,
  });
  assert.deepEqual(t.message("c", 11), { deliver: true, gap: null });
  assert.deepEqual(t.message("c", 15), { deliver: true, gap: { channel: "c", missed: 3, from: 12, to: 14 } });
  assert.deepEqual(t.message("c", 15), { deliver: false, gap: null }, "a duplicate is not delivered");
  assert.deepEqual(t.resumeFrom(), { since: 15, epoch: "e1" });

  // Resubscribe, same epoch, history reached back: nothing missed, replay follows.
  assert.deepEqual(t.subscribed({ channel: "c", seq: 20, epoch: "e1", recovered: true }, 15), { gap: null, reset: null });
  assert.deepEqual(t.message("c", 16), { deliver: true, gap: null });
  // Same epoch, history did not reach back: the whole stretch is one gap.
  assert.deepEqual(t.subscribed({ channel: "c", seq: 30, epoch: "e1", recovered: false }, 16), {
    gap: { channel: "c", missed: 14, from: 17, to: 30 },
    reset: null,
  });
  // A new epoch (restarted server): seq starts again, no false gap, one reset saying where the
  // old history ended for us (the old epoch's losses are unknown) and where the new one starts.
  assert.deepEqual(t.subscribed({ channel: "c", seq: 2, epoch: "e2", recovered: false }, 30), {
    gap: null,
    reset: { channel: "c", oldEpoch: "e1", epoch: "e2", lastSeq: 30, missed: null, seq: 2 },
  });
  assert.deepEqual(t.message("c", 3), { deliver: true, gap: null });
  assert.deepEqual(t.resumeFrom(), { since: 3, epoch: "e2" });
});

test("a reset naming the replaced epoch counts what was missed; another epoch: unknown", () => {
  const t = new SeqTracker();
  t.subscribed({ channel: "c", seq: 0, epoch: "e1", strategy: "drop-oldest" }, null);
  for (let seq = 1; seq <= 5; seq++) t.message("c", seq);
  const base = { event: "subscribed", channel: "c", seq: 0, strategy: "drop-oldest", reset: true };
  assert.equal(t.reset({ ...base, epoch: "e2", previous_epoch: "e1", previous_seq: 9 }).missed, 4);
  assert.equal(t.reset({ ...base, epoch: "e3", previous_epoch: "elsewhere", previous_seq: 9 }).missed, null);
});

test("in-band reset: the new epoch's seq 1, 2, ... are delivered, not taken for duplicates", () => {
  const t = new SeqTracker();
  t.subscribed({ channel: "c", seq: 0, epoch: "e1", strategy: "drop-oldest" }, null);
  for (let seq = 1; seq <= 5; seq++) assert.deepEqual(t.message("c", seq), { deliver: true, gap: null });
  const notice = { event: "subscribed", channel: "c", seq: 0, epoch: "e2", strategy: "drop-oldest", reset: true };
  assert.deepEqual(t.reset(notice), { channel: "c", oldEpoch: "e1", epoch: "e2", lastSeq: 5, missed: null, seq: 0 });
  for (let seq = 1; seq <= 3; seq++) assert.deepEqual(t.message("c", seq), { deliver: true, gap: null });
  assert.deepEqual(t.message("c", 5), { deliver: true, gap: { channel: "c", missed: 1, from: 4, to: 4 } });
  assert.deepEqual(t.resumeFrom(), { since: 5, epoch: "e2" });
});

test("gap accounting: conflate channels skip channel-wide detection; snapshots pass", () => {
  const t = new SeqTracker();
  t.subscribed({ channel: "t", seq: 5, epoch: "e", strategy: "conflate" }, null);
  assert.deepEqual(t.message("t", 3, true), { deliver: true, gap: null });
  assert.deepEqual(t.message("t", 9), { deliver: true, gap: null });
  assert.deepEqual(t.message("t", 7), { deliver: true, gap: null }, "seqs only grow per key");
  assert.equal(t.seq, 9);
});

test("a subscription can start from a known seq", () => {
  const t = new SeqTracker(7, "e");
  assert.deepEqual(t.resumeFrom(), { since: 7, epoch: "e" });
  const noEpoch = new SeqTracker(7);
  assert.deepEqual(noEpoch.resumeFrom(), { since: 7, epoch: null });
  assert.deepEqual(noEpoch.subscribed({ channel: "c", seq: 9, epoch: "x", recovered: false }, 7), {
    gap: { channel: "c", missed: 2, from: 8, to: 9 },
    reset: null,
  });
  const known = new SeqTracker(7, "old");
  assert.deepEqual(known.subscribed({ channel: "c", seq: 9, epoch: "x", recovered: false }, 7), {
    gap: null,
    reset: { channel: "c", oldEpoch: "old", epoch: "x", lastSeq: 7, missed: null, seq: 9 },
  });
});
