/**
 * The `path` column as stored: a request target (HTTP/1) or :path (HTTP/2) with its query
 * values masked and the user info of an absolute target removed.
 *
 * - Query: each `&`-separated parameter keeps its name; a value becomes QUERY_VALUE_MASK
 *   (`?user=***&t=***`). Order, empty values (`a=`), valueless parameters (`flag`) and empty
 *   parameters (`a&&b`) stay as they are. Splitting is on the literal bytes only, so an
 *   encoded `%26` or `%3D` stays inside its name or value.
 * - Fragment (browsers never send one; a hand-made target may): its text after `#` is masked
 *   whole, as it can carry tokens (`#access_token=...`).
 * - User info (`GET http://user:pass@host/x`): removed from an absolute target always,
 *   whatever the options (`http://host/x`).
 */

/** What a masked query value or fragment becomes. */
export const QUERY_VALUE_MASK = '***';

/** How rows are written: what the processor was asked to keep. */
export interface RowOptions {
  /** Keep query parameter values and fragments in `path` (masked by default). */
  keepQueryValues: boolean;
}

export const DEFAULT_ROW_OPTIONS: Readonly<RowOptions> = { keepQueryValues: false };

/** `scheme://userinfo@` at the start of an absolute target: the user info is what goes. */
const USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#]*@/;

function maskQuery(query: string): string {
  let out = '';
  let from = 0;
  while (from <= query.length) {
    let amp = query.indexOf('&', from);
    if (amp < 0) amp = query.length;
    const eq = query.indexOf('=', from);
    out += eq >= 0 && eq < amp - 1 ? query.slice(from, eq + 1) + QUERY_VALUE_MASK : query.slice(from, amp);
    if (amp < query.length) out += '&';
    from = amp + 1;
  }
  return out;
}

/** `target` as the `path` column keeps it. */
export function storedPath(target: string, opts: Readonly<RowOptions>): string {
  const path = target.includes('@') ? target.replace(USERINFO, '$1') : target;
  if (opts.keepQueryValues) return path;
  const q = path.indexOf('?');
  const h = path.indexOf('#');
  if (q < 0 && h < 0) return path;
  const fragment = h >= 0 ? (h + 1 < path.length ? `#${QUERY_VALUE_MASK}` : '#') : '';
  const end = h >= 0 ? h : path.length;
  if (q < 0 || q > end) return path.slice(0, end) + fragment;
  return `${path.slice(0, q + 1)}${maskQuery(path.slice(q + 1, end))}${fragment}`;
}
