// Reading a sidecar's GET /metrics with a real Prometheus text-format parser
// (npm parse-prometheus-text-format, prom2json-compatible output).
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

/** GET /metrics with a bearer token; resolves { status, contentType, text }. */
export async function fetchMetrics(baseUrl, token) {
  const r = await fetch(`${baseUrl}/metrics`, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
  return { status: r.status, contentType: r.headers.get('content-type'), text: await r.text() };
}

/** Parsed metrics: families by name, and look-ups that sum matching samples. */
export function parseMetrics(text) {
  const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  const matches = (labels, want) => Object.entries(want).every(([k, v]) => (labels ?? {})[k] === v);
  return {
    text,
    families,
    /** Sum of the samples of a counter or gauge whose labels include `want`; undefined when absent. */
    value(name, want = {}) {
      const f = families.get(name);
      if (!f) return undefined;
      return f.metrics.filter((m) => matches(m.labels, want)).reduce((a, m) => a + Number(m.value), 0);
    },
    /** A histogram (no labels): { buckets: [[le, cumulative]], count, sum }. */
    histogram(name) {
      const f = families.get(name);
      if (!f) return undefined;
      const m = f.metrics[0];
      const buckets = Object.entries(m.buckets).map(([le, c]) => [le === '+Inf' ? Infinity : Number(le), Number(c)])
        .sort((a, b) => a[0] - b[0]);
      return { buckets, count: Number(m.count), sum: Number(m.sum) };
    },
  };
}

export async function scrape(baseUrl, token) {
  const r = await fetchMetrics(baseUrl, token);
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.text}`);
  return parseMetrics(r.text);
}
