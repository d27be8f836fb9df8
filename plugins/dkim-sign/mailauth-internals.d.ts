// Types for the parts of mailauth 7.1 (pinned) the signer uses beyond its typed entry points: the
// header parser and the body hasher its own DKIM signer and verifier are built from.
declare module 'mailauth/lib/tools.js' {
  export interface ParsedHeaderLine {
    /** Field name, lower case (null for a line that is no field). */
    key: string | null
    /** Field name as written: the DKIM signer builds the h= tag from these. */
    casedKey?: string
    /** The whole field, folds included, without the final CRLF. */
    line: Buffer
  }
  export function parseHeaders(buf: Buffer): { parsed: ParsedHeaderLine[]; original: Buffer }
}

declare module 'mailauth/lib/dkim/body/index.js' {
  export function dkimBody(
    canonicalization: 'relaxed' | 'simple',
    hashAlgo: 'sha256',
    maxBodyLength: number | false,
  ): { update(chunk: Buffer): void; digest(encoding: 'base64'): string }
}
