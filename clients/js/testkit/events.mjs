// Waiting on client events in tests: every wait is bounded, none sleeps.

/** Resolve with the first `event` payload for which `predicate` holds (rejects after `ms`). */
export function next(client, event, predicate = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"`));
    }, ms);
    const off = client.on(event, (payload) => {
      if (!predicate(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Record every `event` payload into the returned array. */
export function record(client, event) {
  const seen = [];
  client.on(event, (payload) => seen.push(payload));
  return seen;
}

/** Resolve when `condition()` holds; `check` is re-run whenever `client` emits one of `events`. */
export function until(client, events, condition, ms = 10000, what = "condition") {
  return new Promise((resolve, reject) => {
    const offs = [];
    const done = (fn) => {
      clearTimeout(timer);
      for (const off of offs) off();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${ms} ms: ${what}`))), ms);
    const check = () => {
      if (condition()) done(resolve);
    };
    for (const event of events) offs.push(client.on(event, check));
    check();
  });
}

/** A promise with its resolve function, for "wait until the handler saw N messages". */
export function signal() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Reject `promise` if it does not settle within `ms`. */
export function within(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}
