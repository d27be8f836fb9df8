// RFC 2047 encoded-words for header text that is not ASCII (a display name, a Subject), for a next
// hop without SMTPUTF8.

/** `value` as B-encoded UTF-8 words of at most 75 characters each, split on whole characters, joined by `separator`. */
export function encodedWords(value: string, separator = ' '): string {
  const words: string[] = []
  let chunk = ''
  for (const ch of value) {
    // 45 octets make 60 base64 characters: with `=?UTF-8?B?` and `?=`, 72.
    if (chunk && Buffer.byteLength(chunk + ch) > 45) {
      words.push(chunk)
      chunk = ''
    }
    chunk += ch
  }
  words.push(chunk)
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w, 'utf8').toString('base64')}?=`).join(separator)
}
