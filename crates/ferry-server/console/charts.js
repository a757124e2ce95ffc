// Inline SVG charts (no library, no inline styles: colours come from classes in app.css).
//
// Each chart is role="img" with a <title> and a <desc> that states the numbers in words, so screen-reader
// users get the same information as sighted ones.

const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) {
    if (c === null || c === undefined) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let counter = 0;

function frame(title, desc, width, height) {
  counter += 1;
  const tid = `chart-t-${counter}`;
  const did = `chart-d-${counter}`;
  return s(
    'svg',
    { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-labelledby': `${tid} ${did}`, preserveAspectRatio: 'xMidYMid meet' },
    s('title', { id: tid }, title),
    s('desc', { id: did }, desc),
  );
}

/**
 * A line chart of `points` [{t: ms, v: number}] with `format(v)` for the axis labels; the axis reaches at
 * least `minTop`. Shows "collecting samples" when there are fewer than two points.
 */
export function lineChart(title, points, format, minTop = 1) {
  const W = 600;
  const H = 200;
  const L = 70;
  const B = 24;
  const last = points.length ? points[points.length - 1].v : 0;
  const svg = frame(title, points.length ? `${points.length} samples; latest ${format(last)}, highest ${format(Math.max(...points.map((p) => p.v)))}.` : 'No samples yet.', W, H);
  svg.appendChild(s('rect', { x: L, y: 4, width: W - L - 4, height: H - B - 4, class: 'chart-bg' }));
  if (points.length < 2) {
    svg.appendChild(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-label' }, 'Collecting samples…'));
    return svg;
  }
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  // A floor for the axis top keeps an idle series from showing a meaningless scale (0 to 1 B/s).
  const vmax = Math.max(minTop, Math.max(...points.map((p) => p.v)) * 1.1);
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 8);
  const y = (v) => H - B - (v / vmax) * (H - B - 10);
  for (const f of [0, 0.5, 1]) {
    const yy = y(vmax * f);
    svg.appendChild(s('line', { x1: L, x2: W - 4, y1: yy, y2: yy, class: 'chart-grid' }));
    svg.appendChild(s('text', { x: L - 6, y: yy + 4, 'text-anchor': 'end', class: 'chart-label' }, format(vmax * f)));
  }
  const d = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  svg.appendChild(s('path', { d, class: 'chart-line' }));
  const secs = Math.round((t1 - t0) / 1000);
  svg.appendChild(s('text', { x: L, y: H - 6, class: 'chart-label' }, `${secs} s ago`));
  svg.appendChild(s('text', { x: W - 4, y: H - 6, 'text-anchor': 'end', class: 'chart-label' }, 'now'));
  return svg;
}

/**
 * Horizontal bars: `rows` [{label, value, tone?}], values in 0..max. `format(v)` labels each bar.
 */
export function barChart(title, rows, max, format) {
  const W = 600;
  const rowH = 28;
  const L = 150;
  const H = Math.max(1, rows.length) * rowH + 8;
  const svg = frame(title, rows.length ? rows.map((r) => `${r.label}: ${format(r.value)}`).join('; ') : 'Nothing to show.', W, H);
  if (!rows.length) {
    svg.appendChild(s('text', { x: W / 2, y: H / 2 + 4, 'text-anchor': 'middle', class: 'chart-label' }, 'Nothing to show yet'));
    return svg;
  }
  const m = Math.max(max || 0, ...rows.map((r) => r.value), 1);
  rows.forEach((r, i) => {
    const y = 4 + i * rowH;
    const w = Math.max(0, (r.value / m) * (W - L - 70));
    const label = r.label.length > 20 ? `${r.label.slice(0, 19)}…` : r.label;
    svg.appendChild(s('text', { x: L - 8, y: y + 18, 'text-anchor': 'end', class: 'chart-label' }, label));
    svg.appendChild(s('rect', { x: L, y: y + 4, width: W - L - 70, height: rowH - 10, class: 'chart-track' }));
    svg.appendChild(s('rect', { x: L, y: y + 4, width: w.toFixed(1), height: rowH - 10, class: `chart-bar tone-${r.tone || 'info'}` }));
    svg.appendChild(s('text', { x: L + w + 6, y: y + 18, class: 'chart-label' }, format(r.value)));
  });
  return svg;
}

/** Keeps a bounded in-memory series per key (e.g. throughput samples per job across page refreshes). */
export class Series {
  constructor(limit = 120) {
    this.limit = limit;
    this.map = new Map();
  }

  push(key, v, t = Date.now()) {
    const arr = this.map.get(key) || [];
    const lastT = arr.length ? arr[arr.length - 1].t : 0;
    // Refreshes arrive in bursts (several events per second): one sample per second is plenty.
    if (t - lastT < 1000 && arr.length) arr[arr.length - 1] = { t: lastT, v };
    else arr.push({ t, v });
    while (arr.length > this.limit) arr.shift();
    this.map.set(key, arr);
  }

  get(key) {
    return this.map.get(key) || [];
  }
}

/** Throughput samples kept while the console is open: key 'all' for the fleet, a JobId for one job. */
export const samples = new Series(180);
