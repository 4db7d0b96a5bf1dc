// The benchmark's summary: per scenario, the median wall and CPU time of each tool, their
// ratio, and the peak RSS (largest of the runs), as a console table, as markdown for the
// README, and as JSON (with every run) for bench/results/.

import { median } from './measure.js';

export type Tool = 'stratum' | 'skopeo';

export interface RunRecord {
  readonly scenario: string;
  readonly tool: Tool;
  readonly rep: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly rssMiB: number;
  readonly facts: Record<string, unknown>;
}

export interface ToolSummary {
  readonly medianSeconds: number;
  readonly medianCpuSeconds: number;
  readonly peakRssMiB: number;
  readonly medianRssMiB: number;
  readonly seconds: readonly number[];
  readonly facts: Record<string, unknown>;
}

export interface ScenarioSummary {
  readonly id: string;
  readonly scenario: string;
  readonly stratum: ToolSummary;
  readonly skopeo: ToolSummary;
  /** stratum's median wall time over skopeo's. */
  readonly ratio: number;
}

export function summarize(
  scenarios: readonly { readonly id: string; readonly title: string }[],
  records: readonly RunRecord[],
): ScenarioSummary[] {
  return scenarios.map((sc) => {
    const stat = (tool: Tool): ToolSummary => {
      const rs = records.filter((r) => r.scenario === sc.id && r.tool === tool);
      return {
        medianSeconds: median(rs.map((r) => r.seconds)),
        medianCpuSeconds: median(rs.map((r) => r.cpuSeconds)),
        peakRssMiB: Math.max(...rs.map((r) => r.rssMiB)),
        medianRssMiB: median(rs.map((r) => r.rssMiB)),
        seconds: rs.map((r) => r.seconds),
        facts: rs[0]?.facts ?? {},
      };
    };
    const stratum = stat('stratum');
    const skopeo = stat('skopeo');
    return {
      id: sc.id,
      scenario: sc.title,
      stratum,
      skopeo,
      ratio: stratum.medianSeconds / skopeo.medianSeconds,
    };
  });
}

export const fmt = (x: number, digits = 2): string => x.toFixed(digits);

const HEADER = [
  'scenario',
  'stratum (s)',
  'skopeo (s)',
  'stratum / skopeo',
  'stratum peak RSS (MiB)',
  'skopeo peak RSS (MiB)',
  'stratum CPU (s)',
  'skopeo CPU (s)',
];

function cells(rows: readonly ScenarioSummary[]): string[][] {
  return rows.map((r) => [
    r.scenario,
    fmt(r.stratum.medianSeconds),
    fmt(r.skopeo.medianSeconds),
    fmt(r.ratio),
    fmt(r.stratum.peakRssMiB, 0),
    fmt(r.skopeo.peakRssMiB, 0),
    fmt(r.stratum.medianCpuSeconds),
    fmt(r.skopeo.medianCpuSeconds),
  ]);
}

/** A fixed-width table for the terminal. */
export function consoleTable(rows: readonly ScenarioSummary[]): string {
  const body = cells(rows);
  const widths = HEADER.map((h, i) => Math.max(h.length, ...body.map((c) => c[i]!.length)));
  const line = (c: readonly string[]) =>
    c.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ');
  return [line(HEADER), ...body.map(line)].join('\n');
}

/** A markdown table with a line saying what was measured where. */
export function markdownTable(rows: readonly ScenarioSummary[], caption: string): string {
  return [
    caption,
    '',
    `| ${HEADER.join(' | ')} |`,
    `|---|${HEADER.slice(1)
      .map(() => '---:')
      .join('|')}|`,
    ...cells(rows).map((c) => `| ${c.join(' | ')} |`),
  ].join('\n');
}

/** The targets: ratio <= 1.0 for the registry scenarios, stratum's RSS <= 150 MB. */
export function targetChecks(rows: readonly ScenarioSummary[]): string[] {
  const out: string[] = [];
  for (const r of rows) {
    if ((r.id === 'pull' || r.id === 'push') && r.ratio > 1.0) {
      out.push(`${r.scenario}: stratum/skopeo ${fmt(r.ratio)} is over the target 1.00`);
    }
    if (r.stratum.peakRssMiB * 1.048576 > 150) {
      out.push(
        `${r.scenario}: stratum peak RSS ${fmt(r.stratum.peakRssMiB, 0)} MiB is over the target 150 MB`,
      );
    }
  }
  return out;
}
