/**
 * The `path` column's masking: query values and fragments masked, names, order and valueless
 * parameters kept; user info of absolute targets removed whatever the options.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { storedPath } from '../../processors/l7/path-mask.js';

const masked = { keepQueryValues: false };
const kept = { keepQueryValues: true };

test('query values are masked; names, order, empty and valueless parameters stay', () => {
  const cases: [string, string][] = [
    ['/x', '/x'],
    ['/x?', '/x?'],
    ['/x?user=alice&t=s3cr3t', '/x?user=***&t=***'],
    ['/x?flag&a=&b=1&&c', '/x?flag&a=&b=***&&c'],
    ['/x?a=1=2&=v', '/x?a=***&=***'],
    ['/search?q=a%26b%3Dc&lang=en', '/search?q=***&lang=***'],
    ['/a%3Fb?k%3D=v%26w', '/a%3Fb?k%3D=***'],
    ['/x?a=b?c=d', '/x?a=***'],
    ['*', '*'],
    ['api.example:443', 'api.example:443'],
  ];
  for (const [target, path] of cases) assert.equal(storedPath(target, masked), path, target);
  for (const [target] of cases) assert.equal(storedPath(target, kept), target, target);
});

test('fragments are masked whole unless values are kept', () => {
  assert.equal(storedPath('/cb#access_token=abc&x=1', masked), '/cb#***');
  assert.equal(storedPath('/cb?code=42#state=s', masked), '/cb?code=***#***');
  assert.equal(storedPath('/cb#', masked), '/cb#');
  assert.equal(storedPath('/cb#frag?a=b', masked), '/cb#***');
  assert.equal(storedPath('/cb?code=42#state=s', kept), '/cb?code=42#state=s');
});

test('user info of an absolute target is never stored', () => {
  for (const opts of [masked, kept]) {
    assert.equal(storedPath('http://user:pass@host/x', opts), 'http://host/x');
    assert.equal(storedPath('https://u%40x:p@ss@host:8443', opts), 'https://host:8443');
    assert.equal(storedPath('HTTP://token@host?x', opts), 'HTTP://host?x');
  }
  assert.equal(storedPath('http://u:p@host/x?k=v', masked), 'http://host/x?k=***');
  assert.equal(storedPath('http://host/x?mail=a@b.c', kept), 'http://host/x?mail=a@b.c');
  assert.equal(storedPath('http://host/x?mail=a@b.c', masked), 'http://host/x?mail=***');
  assert.equal(storedPath('/path/with@sign', masked), '/path/with@sign');
});

test('many parameters and a huge query', () => {
  const names = Array.from({ length: 5000 }, (_, i) => `p${i}`);
  const target = `/bulk?${names.map((n, i) => `${n}=${'v'.repeat(i % 50)}`).join('&')}`;
  const expected = `/bulk?${names.map((n, i) => (i % 50 ? `${n}=***` : `${n}=`)).join('&')}`;
  assert.equal(storedPath(target, masked), expected);
  const huge = `/x?blob=${'A'.repeat(1 << 20)}&after=1`;
  assert.equal(storedPath(huge, masked), '/x?blob=***&after=***');
});
