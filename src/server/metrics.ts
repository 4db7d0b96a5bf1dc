// What the server counts, and how it says so: one access-log line per request, and the
// Prometheus text exposition format (version 0.0.4) for /metrics — request counts by
// method, route and status, bytes received and sent, a latency histogram, requests in
// flight and uploads in progress.

/** One finished (or abandoned) request. */
export interface AccessLogEntry {
  readonly time: Date;
  readonly remote: string;
  /** The authenticated user, if any. */
  readonly user: string | undefined;
  readonly method: string;
  /** The request target as sent (path and query). */
  readonly path: string;
  /** Which API route answered: base, manifest, blob, upload, tags, referrers, catalog, metrics, unknown. */
  readonly route: string;
  readonly status: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly ms: number;
  /** The response was cut off (the client went away, or the server failed mid-body). */
  readonly aborted: boolean;
}

// printable ASCII only: a hostile path cannot forge log lines
function clean(s: string, max = 2048): string {
  const cut = s.length > max ? `${s.slice(0, max)}...` : s;
  return cut.replace(/[^\x21-\x7e]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0').slice(-2)}`);
}

/** `2026-01-01T00:00:00.000Z 127.0.0.1 alice "GET /v2/app/blobs/sha256:..." 200 1234 12.3ms` */
export function formatAccessLine(e: AccessLogEntry): string {
  return (
    `${e.time.toISOString()} ${clean(e.remote, 64)} ${e.user === undefined ? '-' : clean(e.user, 128)} ` +
    `"${clean(e.method, 16)} ${clean(e.path)}" ${e.status} ${e.bytesOut} ${e.ms.toFixed(1)}ms` +
    `${e.bytesIn > 0 ? ` in=${e.bytesIn}` : ''}${e.aborted ? ' aborted' : ''}`
  );
}

/** Latency histogram bounds, seconds. */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

interface Histogram {
  readonly buckets: number[];
  sum: number;
  count: number;
}

function labels(pairs: Record<string, string | number>): string {
  return Object.entries(pairs)
    .map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
    .join(',');
}

export class ServerMetrics {
  readonly #requests = new Map<string, number>();
  readonly #bytesIn = new Map<string, number>();
  readonly #bytesOut = new Map<string, number>();
  readonly #latency = new Map<string, Histogram>();
  #inFlight = 0;
  readonly #gauges: Record<string, () => number> = {};

  /** A gauge read when /metrics is rendered. */
  gauge(name: string, read: () => number): void {
    this.#gauges[name] = read;
  }

  started(): void {
    this.#inFlight++;
  }

  observe(e: AccessLogEntry): void {
    this.#inFlight--;
    // unknown methods are folded together, so hostile requests cannot grow the label set
    const method = KNOWN_METHODS.has(e.method) ? e.method : 'OTHER';
    const mr = labels({ method, route: e.route });
    const key = labels({ method, route: e.route, status: e.status });
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    this.#bytesIn.set(mr, (this.#bytesIn.get(mr) ?? 0) + e.bytesIn);
    this.#bytesOut.set(mr, (this.#bytesOut.get(mr) ?? 0) + e.bytesOut);
    let h = this.#latency.get(mr);
    if (!h) {
      h = { buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.#latency.set(mr, h);
    }
    const s = e.ms / 1000;
    LATENCY_BUCKETS.forEach((b, i) => {
      if (s <= b) h.buckets[i]!++;
    });
    h.sum += s;
    h.count++;
  }

  /** The Prometheus text format. */
  render(): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string, rows: Map<string, number>) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [l, v] of [...rows].sort()) out.push(`${name}{${l}} ${v}`);
    };
    family(
      'stratum_registry_http_requests_total',
      'counter',
      'HTTP requests answered, by method, route and status.',
      this.#requests,
    );
    family(
      'stratum_registry_http_received_bytes_total',
      'counter',
      'Request body bytes received, by method and route.',
      this.#bytesIn,
    );
    family(
      'stratum_registry_http_sent_bytes_total',
      'counter',
      'Response body bytes sent, by method and route.',
      this.#bytesOut,
    );
    const name = 'stratum_registry_http_request_duration_seconds';
    out.push(`# HELP ${name} Time from request to the end of the response, by method and route.`);
    out.push(`# TYPE ${name} histogram`);
    for (const [l, h] of [...this.#latency].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      LATENCY_BUCKETS.forEach((b, i) => {
        out.push(`${name}_bucket{${l},le="${b}"} ${h.buckets[i]}`);
      });
      out.push(`${name}_bucket{${l},le="+Inf"} ${h.count}`);
      out.push(`${name}_sum{${l}} ${h.sum}`);
      out.push(`${name}_count{${l}} ${h.count}`);
    }
    out.push(
      '# HELP stratum_registry_http_requests_in_flight Requests being answered now.',
      '# TYPE stratum_registry_http_requests_in_flight gauge',
      // the /metrics request itself is not counted
      `stratum_registry_http_requests_in_flight ${Math.max(0, this.#inFlight - 1)}`,
    );
    for (const [g, read] of Object.entries(this.#gauges)) {
      out.push(`# TYPE ${g} gauge`, `${g} ${read()}`);
    }
    return `${out.join('\n')}\n`;
  }
}
