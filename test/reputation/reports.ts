// Feedback-loop reports shaped like the ones large mailbox providers send (RFC 5965 ARF), for the
// parser's unit tests and the end-to-end complaint test. CRLF line ends, as on the wire.

export interface OriginalMessage {
  /** The original's header section as it reached the provider (Received lines included). */
  headers: string[]
  body?: string
}

const crlf = (lines: string[]) => lines.join('\r\n') + '\r\n'

/** The original as the receiving side saw it: its MX's Received line on top of ours. */
export function originalFromRelay(o: { queueId: string; relayHost?: string; from: string; to: string; messageId: string; subject?: string }): OriginalMessage {
  const relayHost = o.relayHost ?? 'relay.test'
  return {
    headers: [
      `Received: from ${relayHost} (${relayHost} [192.0.2.10])`,
      `\tby mta1001.mail.example.net (Provider MTA) with ESMTPS id 4Zx9kq3Rz1;`,
      `\tSat, 28 Nov 2026 06:02:11 +0000`,
      `Received: from client.test ([127.0.0.1])`,
      `\tby ${relayHost} (Relay) with ESMTP id ${o.queueId}`,
      `\tfor <${o.to}>;`,
      `\tSat, 28 Nov 2026 06:01:49 +0000`,
      `From: Newsletter <${o.from}>`,
      `To: ${o.to}`,
      `Subject: ${o.subject ?? 'Weekly news'}`,
      `Message-ID: <${o.messageId}>`,
      `Date: Sat, 28 Nov 2026 06:01:48 +0000`,
      `MIME-Version: 1.0`,
      `Content-Type: text/plain; charset=utf-8`,
    ],
    body: 'Hello, here is our weekly news.\r\n',
  }
}

/** Yahoo CFL style: abuse report, User-Agent Yahoo!-Mail-Feedback, Received-Date, full original. */
export function yahooReport(o: { original: OriginalMessage; mailFrom: string; rcptTo: string; to: string }): string {
  const b = '----=_Part_1234567_987654321.1700000000000'
  return crlf([
    'Return-Path: <>',
    'From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>',
    `To: ${o.to}`,
    'Subject: FW: Weekly news',
    'Date: Sat, 28 Nov 2026 07:00:00 +0000',
    'Message-ID: <1700000000000.abcdef@arf.mail.yahoo.com>',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=feedback-report;`,
    `\tboundary="${b}"`,
    '',
    `--${b}`,
    'Content-Type: text/plain; charset=us-ascii',
    'Content-Transfer-Encoding: 7bit',
    '',
    'This is an email abuse report for an email message received from IP 192.0.2.10 on Sat, 28 Nov 2026 06:02:11 +0000.',
    'For more information about this format please see http://www.mipassoc.org/arf/.',
    '',
    `--${b}`,
    'Content-Type: message/feedback-report',
    '',
    'Feedback-Type: abuse',
    'User-Agent: Yahoo!-Mail-Feedback/2.0',
    'Version: 0.1',
    `Original-Mail-From: <${o.mailFrom}>`,
    `Original-Rcpt-To: ${o.rcptTo}`,
    'Received-Date: Sat, 28 Nov 2026 06:02:11 +0000',
    'Reported-Domain: sender.test',
    'Authentication-Results: mta1001.mail.example.net  from=sender.test; domainkeys=neutral (no sig);  from=sender.test; dkim=pass (ok)',
    '',
    `--${b}`,
    'Content-Type: message/rfc822',
    'Content-Disposition: inline',
    '',
    ...o.original.headers,
    '',
    o.original.body ?? '',
    `--${b}--`,
  ])
}

/** AOL style: User-Agent AOL SComp, Source-IP, Redacted-Address, the original's headers only. */
export function aolReport(o: { original: OriginalMessage; rcptTo: string; to: string }): string {
  const b = 'boundary-1137585211-1'
  return crlf([
    'From: scomp@aol.net',
    `To: ${o.to}`,
    'Subject: Email Feedback Report for IP 192.0.2.10',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="feedback-report"; boundary=${b}`,
    '',
    'This is a multi-part message in MIME format.',
    `--${b}`,
    'Content-Type: text/plain; charset="US-ASCII"',
    '',
    'This is an email abuse report for an email message received from IP 192.0.2.10.',
    `--${b}`,
    'Content-Type: message/feedback-report',
    '',
    'Feedback-Type: abuse',
    'User-Agent: AOL SComp',
    'Version: 0.1',
    'Received-Date: Sat, 28 Nov 2026 06:02:11 +0000',
    'Source-IP: 192.0.2.10',
    `Original-Rcpt-To: ${o.rcptTo}`,
    'Redacted-Address: redacted@',
    '',
    `--${b}`,
    'Content-Type: text/rfc822-headers',
    '',
    ...o.original.headers,
    '',
    `--${b}--`,
    '',
  ])
}

/** Microsoft-style: lower-case names, Arrival-Date, the original base64-encoded. */
export function microsoftReport(o: { original: OriginalMessage; mailFrom: string; rcptTo: string; to: string }): string {
  const b = '_c5b5c9f0-2b9c-4f1a-9d7e-3e0f1f2a3b4c_'
  const original = Buffer.from(crlf(o.original.headers) + '\r\n' + (o.original.body ?? ''), 'latin1').toString('base64')
  return crlf([
    'x-sender: staff@hotmail.com',
    `x-rcpt-to: ${o.to}`,
    'from: staff@hotmail.com',
    `to: ${o.to}`,
    'subject: complaint about message from 192.0.2.10',
    'mime-version: 1.0',
    `content-type: multipart/report; report-type=feedback-report; boundary="${b}"`,
    '',
    `--${b}`,
    'content-type: text/plain; charset="us-ascii"',
    '',
    'This is an email abuse report for an email message received from IP 192.0.2.10',
    '',
    `--${b}`,
    'content-type: message/feedback-report',
    '',
    'feedback-type: abuse',
    'user-agent: Microsoft Junk Mail Reporting Program',
    'version: 1',
    `original-mail-from: ${o.mailFrom}`,
    `original-rcpt-to: ${o.rcptTo}`,
    'arrival-date: Sat, 28 Nov 2026 06:02:11 +0000',
    'source-ip: 192.0.2.10',
    '',
    `--${b}`,
    'content-type: message/rfc822',
    'content-transfer-encoding: base64',
    '',
    ...(original.match(/.{1,76}/g) ?? []),
    '',
    `--${b}--`,
    '',
  ])
}
