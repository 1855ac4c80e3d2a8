/**
 * What the readable fixture formats (test/fixtures/<protocol>/*) share: escaped byte
 * strings and the `! path=value` checks.
 */

/** Bytes of an escaped fixture string: \r \n \t \\ \" and \xHH; other characters as UTF-8. */
export function unescapeBytes(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== '\\') {
      out.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const e = s[++i];
    if (e === 'r') out.push(13);
    else if (e === 'n') out.push(10);
    else if (e === 't') out.push(9);
    else if (e === '\\' || e === '"') out.push(e.charCodeAt(0));
    else if (e === 'x') {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else throw new Error(`bad escape \\${e} in ${JSON.stringify(s)}`);
  }
  return Buffer.from(out);
}

/** The value at a dotted `path` of `obj` as text, what a `! path=value` check compares. */
export function lookup(obj: Record<string, unknown>, path: string): string {
  let v: unknown = obj;
  for (const k of path.split('.')) v = (v as Record<string, unknown> | undefined)?.[k];
  return String(v);
}
