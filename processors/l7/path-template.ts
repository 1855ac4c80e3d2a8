/**
 * The `path_template` column: a request's path with what names one resource among many
 * replaced by `{id}`, so that one endpoint is one value (`/users/{id}/orders`) in reports,
 * the page and metric labels, whose series it bounds.
 *
 * netrig sees bytes, not the server's routes, so the template is a rule on the path alone:
 * - the query and fragment go; an absolute target (`http://host/x`) keeps its path;
 * - a segment becomes `{id}` when it is digits with separators (`42`, `-1`, `3.14`,
 *   `2024-01-02`; not a dotted version `1.2.3`), a UUID, hex of 16
 *   digits or more (hashes, object ids), or a token of 8 characters or more that mixes
 *   digits with letters and has no dot (`a8Fq20xZ`, `usr_01HV3...`; not `v2`, `api2`,
 *   `index2.html`);
 * - at most MAX_SEGMENTS segments and MAX_TEMPLATE_BYTES characters are kept, the rest is
 *   `/…`: a path made of many distinct words cannot make many values out of one endpoint's
 *   tail.
 * Paths that are not origin-form (`*`, CONNECT's `host:port`) stay as they are, capped.
 */

export const ID_SEGMENT = '{id}';
const MAX_SEGMENTS = 8;
const MAX_TEMPLATE_BYTES = 200;
const MORE = '/…';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Whether a path segment names one resource among many (see the module comment). */
export function isIdSegment(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  let digits = 0;
  let letters = 0;
  let dots = 0;
  let other = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (isDigit(c)) digits++;
    else if ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a) letters++;
    else if (c === 0x2e) dots++;
    else if (c !== 0x2d && c !== 0x5f && c !== 0x7e) other++;
  }
  if (digits === 0 || other > 0) return false;
  // Digits with separators: a number, a date, a sequence (not a dotted version).
  if (letters === 0 && dots <= 1) return true;
  if (n === 36 && UUID.test(s)) return true;
  if (dots > 0) return false;
  if (n >= 16 && /^[0-9a-f]+$/i.test(s)) return true;
  return n >= 8 && letters > 0;
}

/** `target` (a request target or :path) as the `path_template` column keeps it. */
export function pathTemplate(target: string): string {
  let end = target.length;
  const q = target.indexOf('?');
  if (q >= 0) end = q;
  const h = target.indexOf('#');
  if (h >= 0 && h < end) end = h;
  let start = 0;
  if (target.charCodeAt(0) !== 0x2f) {
    // Absolute form: the path after the authority; anything else stays as it is.
    const scheme = target.indexOf('://');
    const slash = scheme >= 0 && scheme < end ? target.indexOf('/', scheme + 3) : -1;
    if (slash < 0 || slash >= end) return target.slice(0, Math.min(end, MAX_TEMPLATE_BYTES));
    start = slash;
  }
  let out = '';
  let segments = 0;
  let from = start + 1;
  while (from <= end) {
    let to = target.indexOf('/', from);
    if (to < 0 || to > end) to = end;
    if (++segments > MAX_SEGMENTS) return out + MORE;
    const seg = target.slice(from, to);
    const next = `${out}/${isIdSegment(seg) ? ID_SEGMENT : seg}`;
    if (next.length > MAX_TEMPLATE_BYTES) return out + MORE;
    out = next;
    from = to + 1;
  }
  return out;
}
