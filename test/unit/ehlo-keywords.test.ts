// How nodemailer is made to read an EHLO reply (core/delivery/ehlo-keywords.ts): the server's name
// and greeting never count as keywords; SIZE's number and AUTH's mechanisms survive.
import { describe, expect, it } from 'vitest'
import { keywordsOnly } from '../../core/delivery/ehlo-keywords.js'

describe('keywordsOnly', () => {
  it('empties the greeting line, whatever keyword its name spells', () => {
    expect(keywordsOnly('250 mx-starttls-dsn.example Hello PIPELINING')).toBe('250 server')
    expect(keywordsOnly('250-smtp-auth.example at your service\n250 8BITMIME')).toBe('250-server\n250 8BITMIME')
  })
  it('keeps each keyword, with only the parameters nodemailer reads', () => {
    const reply = ['250-mx.example', '250-SIZE 35882577', '250-AUTH PLAIN LOGIN PIPELINING', '250-AUTH=LOGIN PLAIN', '250-X-VENDOR DSN STARTTLS', '250 ENHANCEDSTATUSCODES'].join('\n')
    expect(keywordsOnly(reply).split('\n')).toEqual(['250-server', '250-SIZE 35882577', '250-AUTH PLAIN LOGIN', '250-AUTH=LOGIN PLAIN', '250-X-VENDOR', '250 ENHANCEDSTATUSCODES'])
  })
  it('leaves a refusal as the server wrote it', () => {
    expect(keywordsOnly('550 5.7.1 no EHLO for you, use STARTTLS')).toBe('550 5.7.1 no EHLO for you, use STARTTLS')
  })
})
