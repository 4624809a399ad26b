#!/usr/bin/env python3
"""Writes hamlet's hand-written fuzz seeds into fuzz/seeds-raw/<target>/.

Every input here is synthetic and the project's own: reserved names and
addresses only (example.*, 192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32).
The tokenize target also starts from corpus/messages/*.eml (hand-written,
see corpus/README.md) but for 10-huge-header.eml (past -max_len).
Nothing is taken from any real mail corpus.

The committed seeds (fuzz/seeds/<target>/) are these, grown by fuzzing and
minimized with `cargo fuzz cmin` (see fuzz/README.md).
"""
import hashlib
import os
import shutil
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "seeds-raw")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def tokenize():
    msgs = os.path.join(here, "..", "corpus", "messages")
    for name in sorted(os.listdir(msgs)):
        if name.endswith(".eml") and not name.startswith("10-"):
            with open(os.path.join(msgs, name), "rb") as f:
                put("tokenize", f.read())
    put("tokenize", "")
    put("tokenize", "Subject: hi\n\nhello")
    put("tokenize", (
        "From: =?UTF-8?Q?Al=C3=AFce?= <alice@example.org>\r\n"
        "To: bob@example.net\r\n"
        "Subject: =?ISO-2022-JP?B?GyRCJCIbKEI=?= report\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/related; boundary=\"a\"\r\n\r\n"
        "--a\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "caf=C3=A9 =\r\nsoft break http://www.example.com/a?b=c&d=%41 mailto:x@example.org\r\n"
        "--b\r\nContent-Type: text/html; charset=windows-1252\r\n\r\n"
        "<html><body><a href=\"http://198.51.100.7/x\">click</a>&nbsp;&#233;&eacute;"
        "<!-- c --><script>var x=1;</script><img src=cid:p1></body></html>\r\n"
        "--b--\r\n"
        "--a\r\nContent-Type: image/png; name=\"p.png\"\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: inline; filename*=UTF-8''%C3%A9t%C3%A9.png\r\n\r\n"
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\r\n"
        "--a--\r\n"))
    put("tokenize", (
        "Received: from mx.example.org (mx.example.org [192.0.2.1])\n\tby mail.example.net; Sat, 5 Dec 2026 10:00:00 +0000\n"
        "Content-Type: message/rfc822\n\n"
        "Subject: inner\nContent-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: 8bit\n\n"
        "\xd0\xd2\xc9\xd7\xc5\xd4 FREE $$$ 100% WIN!!! www.example.com\n"))
    put("tokenize", (
        "Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\n"
        "begin 644 a.txt\n#86)C\n`\nend\n"))


def spamd():
    for cmd in ["CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "HEADERS"]:
        put("spamd", f"{cmd} SPAMC/1.5\r\nContent-length: 42\r\nUser: alice\r\n\r\n")
    put("spamd", "PING SPAMC/1.5\r\n\r\n")
    put("spamd", "SKIP SPAMC/1.2\r\n\r\n")
    put("spamd", "CHECK SPAMC/1.2\nContent-length: 5\nCompress: zlib\nX-Unknown: whatever\n\n")
    put("spamd", "TELL SPAMC/1.5\r\nMessage-class: spam\r\nSet: local, remote\r\nContent-length: 12\r\n\r\n")
    put("spamd", "TELL SPAMC/1.5\r\nMessage-class: ham\r\nRemove: local\r\nContent-length: 12\r\n\r\n")
    put("spamd", "SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: True ; 9.7 / 5.0\r\n\r\nA,B")
    put("spamd", "SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.5 / 5.0\r\n\r\n")
    put("spamd", "SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\nDidRemove: remote\r\n\r\n")
    put("spamd", "SPAMD/1.1 76 EX_PROTOCOL bad request\r\n")
    put("spamd", "SPAMD/1.5 0 PONG\r\n")


def policy():
    req = (
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        "client_address=192.0.2.25\nclient_name=mail.example.org\nreverse_client_name=mail.example.org\n"
        "helo_name=mail.example.org\nsender=alice@example.org\nrecipient=bob@example.net\n"
        "recipient_count=0\nqueue_id=\ninstance=123.456.7\nsize=0\nsasl_method=\nsasl_username=\n"
        "ccert_subject=\nencryption_protocol=TLSv1.3\n\n")
    put("policy", req)
    put("policy", req + req.replace("192.0.2.25", "2001:db8::1").replace("RCPT", "DATA"))
    put("policy", req.replace("\n", "\r\n"))
    put("policy", "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=unknown\nclient_name=unknown\nsender=\nrecipient=\n\n")
    put("policy", "\n")


def milter():
    def pkt(cmd, data=b""):
        return struct.pack(">I", len(data) + 1) + cmd + data
    session = b"".join([
        pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)),
        pkt(b"D", b"Cj\0mx.example.net\0{daemon_name}\0smtpd\0v\0Postfix 3.7\0"),
        pkt(b"C", b"mail.example.org\x004\x00\x19192.0.2.25\0"),
        pkt(b"D", b"H\0"),
        pkt(b"H", b"mail.example.org\0"),
        pkt(b"D", b"Mi\0ABC123\0{auth_authen}\0alice\0"),
        pkt(b"M", b"<alice@example.org>\0SIZE=1234\0"),
        pkt(b"R", b"<bob@example.net>\0"),
        pkt(b"T"),
        pkt(b"L", b"From\0Alice <alice@example.org>\0"),
        pkt(b"L", b"Subject\0Minutes\0"),
        pkt(b"L", b"X-Empty\0\0"),
        pkt(b"N"),
        pkt(b"B", b"Hi Bob,\r\nthe minutes are attached.\r\n"),
        pkt(b"E"),
        pkt(b"A"),
        pkt(b"Q"),
    ])
    put("milter", session)
    put("milter", pkt(b"O", struct.pack(">III", 2, 0x01, 0)) + pkt(b"K"))
    put("milter", pkt(b"C", b"[2001:db8::1]\x006\x01\xbbIPv6:2001:db8::1\0") + pkt(b"C", b"localhost\0U")
        + pkt(b"C", b"local\0L\0\0/run/x.sock\0"))
    put("milter", pkt(b"U", b"XCLIENT\0") + pkt(b"E", b"tail"))


def dump():
    put("dump", (
        "# hamlet dump\nschema 3\ntokenizer 2\ntotals 12 30\nmessages 12 30\nbias -0.25\nmix 0.5 -0.125 0.0\n"
        "t 3 0 20700 0.75 subject:cheap\nt 0 5 20701 -1.5 minutes\nt 1 1 20702 0 a token with spaces\n"
        "t 2 0 20703 0.125 tab\\there\\nnewline\\\\back\\rcr\n"
        "g 17 0.5\ng 1048575 -0.25\n"
        "j " + "ab" * 32 + " spam 20700\n"
        "j " + "0f" * 32 + " ham 20701 2\n"
        "j " + "9A" * 32 + " spam 20702 1 auto\n"))
    put("dump", "schema 3\r\ntokenizer 2\r\ntotals 0 0\r\n")
    put("dump", "")


def resp():
    put("resp", b"*3\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n*0\r\n:42\r\n-WRONGTYPE no\r\n+OK\r\n$2\r\n\r\n\r\n")
    put("resp", b"*2\r\n$5\r\nhello\r\n$-1\r\n*1\r\n$3\r\nabc\r\n")
    put("resp", b"*-1\r\n$-1\r\n*2\r\n:1\r\n+x\r\n")


if __name__ == "__main__":
    shutil.rmtree(out, ignore_errors=True)
    for f in (tokenize, spamd, policy, milter, dump, resp):
        f()
    for t in sorted(os.listdir(out)):
        print(t, len(os.listdir(os.path.join(out, t))), file=sys.stderr)
