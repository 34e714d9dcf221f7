"""The pure core of service detection: the probe database, the matcher, the probe planner.

Replies here are built byte by byte from each protocol's specification (MySQL handshake,
RFB, Telnet IAC, X.224, NTP, SNMP BER, MongoDB OP_MSG) for the services the lab cannot run.
"""

from __future__ import annotations

import os
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit.errors import UsageError
from portkit.model import Protocol
from portkit.services import (
    builtin_database,
    decode_payload,
    load_database,
    load_toml,
    match_reply,
    parse_http_response,
    plan_probes,
)
from portkit.services._match import render
from portkit.services._nmapdb import convert_template, parse_match_line
from portkit.services._probes import parse_ports

DB = builtin_database()
TCP, UDP = Protocol.TCP, Protocol.UDP


def probe(name: str, protocol: Protocol = TCP):  # type: ignore[no-untyped-def]
    found = DB.get(protocol, name)
    assert found is not None, name
    return found


def ident(reply: bytes, name: str = "null", protocol: Protocol = TCP):  # type: ignore[no-untyped-def]
    return match_reply(reply, probe(name, protocol), DB)


# --- the database itself ------------------------------------------------------------------

_REF = re.compile(r"\{(\w+)(?:/[^/}]*/[^/}]*)?\}")


def test_builtin_database_is_consistent() -> None:
    names = [(p.protocol, p.name) for p in DB.probes]
    assert len(names) == len(set(names))
    for p in DB.probes:
        assert 1 <= p.rarity <= 9, p
        for rule in p.rules:
            regex = rule.regex()
            assert regex is not None, rule.pattern
            groups = set(regex.groupindex) | {str(i) for i in range(1, regex.groups + 1)}
            for template in (rule.product, rule.version, rule.extrainfo, rule.hostname, *rule.cpe):
                for ref in _REF.findall(template):
                    assert ref in groups, (
                        f"{p.name}/{rule.service}: {{{ref}}} is not a group of {rule.pattern}"
                    )


def test_every_required_service_has_a_rule() -> None:
    services = {r.service for p in DB.probes for r in p.rules}
    required = {"http", "ssh", "ftp", "smtp", "pop3", "imap", "redis", "postgresql", "mysql", "memcached",
                "mongodb", "mqtt", "vnc", "ms-wbt-server", "telnet", "domain", "ntp", "snmp"}  # fmt: skip
    assert required <= services


def test_toml_errors_name_the_probe() -> None:
    with pytest.raises(ValueError, match=r"probe #1 \(x\) match #1: unknown keys \['colour'\]"):
        load_toml('[[probe]]\nname = "x"\n[[probe.match]]\nservice = "a"\npattern = "a"\ncolour = "red"\n')
    with pytest.raises(ValueError, match="does not compile"):
        load_toml('[[probe]]\nname = "x"\n[[probe.match]]\nservice = "a"\npattern = "(unclosed"\n')


def test_unknown_database_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="expected builtin, nmap or a file path"):
        load_database("nmapp")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[probe]]\n")
    with pytest.raises(UsageError, match=r"bad\.toml"):
        load_database(bad)


# --- payloads, ports, templates -----------------------------------------------------------


@given(st.binary(max_size=200))
def test_payload_escapes_round_trip(data: bytes) -> None:
    assert decode_payload("".join(f"\\x{b:02x}" for b in data)) == data


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\")))
def test_payload_plain_text_is_itself(text: str) -> None:
    assert decode_payload(text) == text.encode()


def test_payload_c_escapes() -> None:
    assert decode_payload(r"GET / HTTP/1.0\r\n\r\n\0\x16\\") == b"GET / HTTP/1.0\r\n\r\n\x00\x16\\"


@given(st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 50)), max_size=20))
def test_parse_ports(ranges: list[tuple[int, int]]) -> None:
    spans = [(lo, min(65535, lo + n)) for lo, n in ranges]
    text = ",".join(f"{lo}-{hi}" if hi != lo else str(lo) for lo, hi in spans)
    assert parse_ports(text) == frozenset(p for lo, hi in spans for p in range(lo, hi + 1))


def test_render_drops_what_a_missing_group_leaves() -> None:
    m = re.search(rb"^(?P<a>x)(?P<b>y)?", b"x")
    assert m is not None
    assert render("{b}; protocol {a}", m) == "protocol x"
    assert render("{a} ({b})", m) == "x"
    assert render("{a}, {b}", m) == "x"
    assert render("{{literal}} {a/x/z}", m) == "{literal} z"


def test_render_keeps_only_printable_text() -> None:
    m = re.search(rb"(.+)", b"ab\x00\x07c\xff")
    assert m is not None
    assert render("{1}", m) == "abc"


# --- banners and replies, per protocol ----------------------------------------------------


def test_ssh_banners() -> None:
    # Split as nmap splits it (nmap -sV against Debian 12's sshd says the same, see
    # tests/test_nmap_tools.py): the package release is part of the version.
    found = ident(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n")
    assert (found.service, found.product, found.version) == ("ssh", "OpenSSH", "9.2p1 Debian 2+deb12u10")
    assert (found.extrainfo, found.ostype) == ("protocol 2.0", "Linux")
    assert found.cpe == ("cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel")
    assert not found.soft
    ubuntu = ident(b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\r\n")
    assert (ubuntu.version, ubuntu.extrainfo) == ("8.9p1 Ubuntu 3ubuntu0.10", "Ubuntu Linux; protocol 2.0")
    freebsd = ident(b"SSH-2.0-OpenSSH_9.6 FreeBSD-20240104\r\n")
    assert (freebsd.version, freebsd.extrainfo, freebsd.ostype) == (
        "9.6", "FreeBSD 20240104; protocol 2.0", "FreeBSD"
    )
    plain = ident(b"SSH-2.0-OpenSSH_9.7\r\n")
    assert (plain.version, plain.extrainfo, plain.ostype) == ("9.7", "protocol 2.0", "")
    assert ident(b"SSH-2.0-dropbear_2022.83\r\n").product == "Dropbear sshd"
    other = ident(b"SSH-2.0-Go\r\n")
    assert (other.service, other.product) == ("ssh", "Go")


def test_ftp_and_smtp_banners_soft_and_hard() -> None:
    assert ident(b"220 (vsFTPd 3.0.3)\r\n").version == "3.0.3"
    assert ident(b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:127.0.0.1]\r\n").product == "ProFTPD"
    postfix = ident(b"220 mail.example.org ESMTP Postfix (Debian/GNU)\r\n")
    assert (postfix.service, postfix.product, postfix.hostname) == (
        "smtp",
        "Postfix smtpd",
        "mail.example.org",
    )
    assert ident(b"220 mx.example.org ESMTP Exim 4.96 Sun, 22 Nov 2026\r\n").version == "4.96"
    unknown_smtp = ident(b"220 relay.example.org ESMTP ready\r\n")
    assert unknown_smtp.service == "smtp" and unknown_smtp.soft
    bare = ident(b"220 welcome\r\n")
    assert bare.service == "ftp" and bare.soft


def test_mail_banners() -> None:
    assert ident(b"+OK Dovecot (Debian) ready.\r\n").product == "Dovecot pop3d"
    imap = ident(
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE] Dovecot (Debian) ready.\r\n"
    )
    assert (imap.service, imap.product, imap.extrainfo) == ("imap", "Dovecot imapd", "Debian")
    assert ident(b"* OK IMAP4rev1 Service Ready\r\n").service == "imap"


def _mysql_handshake(version: bytes) -> bytes:
    body = b"\x0a" + version + b"\x00" + struct.pack("<I", 42) + b"abcdefgh\x00" + b"\xff\xf7\x08\x02\x00"
    body += b"\x00" * 13 + b"ijklmnopqrst\x00mysql_native_password\x00"
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


def test_mysql_and_mariadb_handshakes() -> None:
    mysql = ident(_mysql_handshake(b"8.0.36-0ubuntu0.22.04.1"))
    assert (mysql.service, mysql.product, mysql.version) == ("mysql", "MySQL", "8.0.36")
    maria = ident(_mysql_handshake(b"5.5.5-10.11.6-MariaDB-0+deb12u1"))
    assert (maria.product, maria.version, maria.extrainfo) == ("MariaDB", "10.11.6", "0+deb12u1")
    maria11 = ident(_mysql_handshake(b"11.4.2-MariaDB-log"))
    assert (maria11.product, maria11.version) == ("MariaDB", "11.4.2")


def test_vnc_and_telnet() -> None:
    vnc = ident(b"RFB 003.008\n")
    assert (vnc.service, vnc.extrainfo) == ("vnc", "protocol 003.008")
    # IAC DO TERMINAL-TYPE, IAC DO TSPEED, IAC DO X-DISPLAY, IAC DO NEW-ENVIRON (telnetd's opening)
    telnet = ident(b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27")
    assert telnet.service == "telnet"


def test_rdp_connection_confirm() -> None:
    # TPKT + X.224 CC + RDP_NEG_RSP selecting TLS (MS-RDPBCGR 2.2.1.2)
    reply = b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00"
    found = ident(reply, "rdp-x224")
    assert found.service == "ms-wbt-server"


def test_redis_memcached_postgres() -> None:
    assert ident(b"-NOAUTH Authentication required.\r\n", "redis-info").extrainfo == "authentication required"
    assert ident(b"-ERR wrong number of arguments for 'get' command\r\n", "http-get").soft
    mem = ident(b"VERSION 1.6.21\r\n", "memcached-version")
    assert (mem.service, mem.product, mem.version) == ("memcached", "Memcached", "1.6.21")
    scram = b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"
    pg = ident(scram, "postgres-startup")
    assert (pg.service, pg.extrainfo) == ("postgresql", "auth SCRAM-SHA-256")
    err = b"E\x00\x00\x00\x5bSFATAL\x00VFATAL\x00C28000\x00Mno pg_hba.conf entry for host\x00\x00"
    assert ident(err, "postgres-startup").extrainfo == "no pg_hba.conf entry for host"


def _bson(items: list[tuple[bytes, object]]) -> bytes:
    out = b""
    for key, value in items:
        if isinstance(value, int):
            out += b"\x10" + key + b"\x00" + struct.pack("<i", value)
        else:
            assert isinstance(value, bytes)
            out += b"\x02" + key + b"\x00" + struct.pack("<i", len(value) + 1) + value + b"\x00"
    return struct.pack("<i", len(out) + 5) + out + b"\x00"


def test_mongodb_buildinfo_reply() -> None:
    doc = _bson([(b"version", b"7.0.5"), (b"gitVersion", b"7809d71e"), (b"ok", 1)])
    body = struct.pack("<I", 0) + b"\x00" + doc
    reply = struct.pack("<iiii", 16 + len(body), 99, 0x706B, 2013) + body
    found = ident(reply, "mongodb-buildinfo")
    assert (found.service, found.product, found.version) == ("mongodb", "MongoDB", "7.0.5")


def test_mqtt_connack() -> None:
    assert ident(b"\x20\x02\x00\x05", "mqtt-connect").extrainfo == "connection refused"
    accepted = ident(b"\x20\x02\x00\x00\x90\x03\x00\x01\x00", "mqtt-connect")
    assert (accepted.service, accepted.product) == ("mqtt", "")


def test_dns_version_bind_udp_and_tcp() -> None:
    answer = (b"\x00\x06\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03"
              b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x0e\x0d9.18.24-1-Debian")  # fmt: skip
    bind = ident(answer, "dns-version", UDP)
    assert (bind.service, bind.product, bind.version) == ("domain", "ISC BIND", "9.18.24-1-Debian")
    over_tcp = ident(struct.pack(">H", len(answer)) + answer, "dns-version-tcp")
    assert (over_tcp.product, over_tcp.version) == ("ISC BIND", "9.18.24-1-Debian")
    refused = b"\x00\x06\x81\x05\x00\x01\x00\x00\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03"
    assert ident(refused, "dns-version", UDP).service == "domain"


def test_ntp_replies() -> None:
    # mode 4 (server), version 4, stratum 2 (RFC 5905 figure 8)
    server = b"\x24\x02\x03\xe8" + b"\x00" * 8 + b"\xc0\xa8\x01\x01" + b"\x00" * 32
    assert ident(server, "ntp-time", UDP).service == "ntp"
    # mode 6 READVAR response (RFC 9327): response bit set, association 0
    text = b'version="ntpd 4.2.8p15@1.3728-o Wed Sep 23 11:46:38 UTC 2020 (1)", processor="x86_64"'
    readvar = b"\x16\x82\x00\x01\x06\x15\x00\x00\x00\x00" + struct.pack(">H", len(text)) + text
    found = ident(readvar, "ntp-readvar", UDP)
    assert (found.product, found.version) == ("NTP", "4.2.8p15")


def _ber(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body


def test_snmp_sysdescr_response() -> None:
    descr = b"Linux lab 6.1.0-18-amd64 #1 SMP x86_64"
    oid = _ber(0x06, b"\x2b\x06\x01\x02\x01\x01\x01\x00")
    varbind = _ber(0x30, _ber(0x30, oid + _ber(0x04, descr)))
    pdu = _ber(0xA2, b"\x02\x04pk\x00\x01\x02\x01\x00\x02\x01\x00" + varbind)
    reply = _ber(0x30, b"\x02\x01\x00" + _ber(0x04, b"public") + pdu)
    found = ident(reply, "snmp-v1-sysdescr", UDP)
    assert found.service == "snmp"
    assert found.extrainfo == "public; " + descr.decode()


def test_http_servers() -> None:
    apache = ident(b"HTTP/1.1 200 OK\r\nDate: x\r\nServer: Apache/2.4.62 (Debian)\r\n\r\n", "http-get")
    assert (apache.product, apache.version, apache.extrainfo) == ("Apache httpd", "2.4.62", "Debian")
    other = ident(b"HTTP/1.1 404 Not Found\r\nServer: Jetty(9.4.z)\r\n\r\n", "http-get")
    assert other.service == "http"
    bare = ident(b"HTTP/1.0 200 OK\r\n\r\n", "http-get")
    assert (bare.service, bare.product) == ("http", "")


def test_banner_rules_apply_to_every_probe() -> None:
    # An SSH server answers an HTTP probe with its banner first.
    found = ident(b"SSH-2.0-OpenSSH_9.6\r\nInvalid SSH identification string.\r\n", "http-get")
    assert (found.service, found.version) == ("ssh", "9.6")


def test_no_reply_no_match() -> None:
    assert ident(b"") is None
    assert ident(b"\x00\x01garbage", "http-get") is None


# --- HTTP facts ---------------------------------------------------------------------------


def test_parse_http_response() -> None:
    reply = (b"HTTP/1.1 301 Moved Permanently\r\nServer: nginx\r\nLocation: https://example.org/\r\n\r\n"
             b"<html><head><TITLE>Moved &amp; gone</TITLE></head></html>")  # fmt: skip
    info = parse_http_response(reply)
    assert info is not None
    assert (info.status, info.server, info.location, info.title) == (
        301, "nginx", "https://example.org/", "Moved & gone",
    )  # fmt: skip
    assert parse_http_response(b"SSH-2.0-x\r\n") is None


# --- planning -----------------------------------------------------------------------------


def test_plan_orders_by_port_then_hint_then_rarity() -> None:
    on_redis_port = [p.name for p in plan_probes(DB, TCP, 6379, intensity=7)]
    assert on_redis_port[0] == "redis-info"
    hinted = [p.name for p in plan_probes(DB, TCP, 40000, intensity=7, hints=["postgresql"])]
    assert hinted[0] == "postgres-startup"
    plain = plan_probes(DB, TCP, 40000, intensity=7)
    assert [p.rarity for p in plain] == sorted(p.rarity for p in plain)
    assert "null" not in {p.name for p in plain} and "tls" not in {p.name for p in plain}


def test_plan_intensity_and_registered_ports() -> None:
    assert plan_probes(DB, TCP, 40000, intensity=0) == []
    assert [p.name for p in plan_probes(DB, TCP, 11211, intensity=0)] == ["memcached-version"]
    light = {p.name for p in plan_probes(DB, TCP, 40000, intensity=2)}
    assert all(probe(n).rarity <= 2 for n in light)
    everything = {p.name for p in plan_probes(DB, TCP, 40000, intensity=9)}
    assert everything == {p.name for p in DB.for_protocol(TCP)} - {"null", "tls"}


def test_plan_after_soft_match_is_narrower() -> None:
    narrowed = [
        p.name for p in plan_probes(DB, TCP, 40000, intensity=7, within="redis", exclude=["http-get"])
    ]
    assert narrowed and all("redis" in probe(n).services for n in narrowed)
    assert "http-get" not in narrowed


def test_plan_udp() -> None:
    names = [p.name for p in plan_probes(DB, UDP, 161, intensity=7)]
    assert names[0] == "snmp-v1-sysdescr"
    assert set(names) == {"dns-version", "ntp-readvar", "ntp-time", "snmp-v1-sysdescr"}


# --- nmap's file --------------------------------------------------------------------------


def test_nmap_match_lines() -> None:
    rule = parse_match_line(
        r"match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)[ -]{1,2}Debian[ -_]([^\r\n]+)\r?\n| "
        r"p/OpenSSH/ v/$2 Debian $3/ i/protocol $1/ o/Linux/ "
        r"cpe:/a:openbsd:openssh:$2/ cpe:/o:debian:debian_linux/ a"
    )
    assert rule is not None and not rule.soft
    assert (rule.product, rule.version, rule.extrainfo, rule.ostype) == (
        "OpenSSH",
        "{2} Debian {3}",
        "protocol {1}",
        "Linux",
    )
    assert rule.cpe == ("cpe:/a:openbsd:openssh:{2}", "cpe:/o:debian:debian_linux")
    soft = parse_match_line(r"softmatch ftp m/^220[- ].*\r\n/i")
    assert soft is not None and soft.soft and soft.flags == "i"
    assert convert_template('$SUBST(1,"_",".") $P(2) {x}') == "{1/_/.} {2} {{x}}"


@pytest.mark.skipif(not os.path.exists("/usr/share/nmap/nmap-service-probes"), reason="nmap not installed")
def test_installed_nmap_file_reads() -> None:
    db = load_database("nmap")
    assert len(db.probes) > 100 and db.rule_count > 5000
    null = db.get(TCP, "null")
    assert null is not None and len(null.rules) > 1000
    assert db.get(TCP, "tls") is not None  # portkit's handshake probe joins nmap's
    found = match_reply(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", null, db)
    assert found is not None and (found.service, found.product) == ("ssh", "OpenSSH")
    assert found.version.startswith("9.2p1")
    get = db.get(TCP, "GetRequest")
    assert get is not None
    nginx = match_reply(b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n", get, db)
    assert nginx is not None and (nginx.product, nginx.version) == ("nginx", "1.22.1")


def test_parse_intensity() -> None:
    from portkit.services import parse_intensity

    assert [parse_intensity(x) for x in ("0", "9", "light", "ALL", "default", 5)] == [0, 9, 2, 9, 7, 5]
    for bad in ("10", "-1", "max", ""):
        with pytest.raises(UsageError, match="expected 0 \\(light\\) to 9 \\(all\\)"):
            parse_intensity(bad)


def test_waits_follow_the_round_trip_time() -> None:
    from portkit.services._plan import Timing

    null = probe("null")
    lan, far = Timing(0.0005), Timing(0.2)
    assert lan.probe(null) == pytest.approx(0.604) and far.probe(null) == pytest.approx(2.2)
    assert lan.grace < 0.2 < far.grace
    assert Timing(5.0).probe(null) == 6.0  # clamped: a dead link does not wait forever
    assert Timing(0.0005, scale=2).probe(null) == pytest.approx(2 * lan.probe(null))


def test_more_banners_and_apps() -> None:
    nats = ident(b'INFO {"server_id":"NBX","server_name":"n1","version":"2.10.7","proto":1}\r\n')
    assert (nats.service, nats.product, nats.version) == ("nats", "NATS server", "2.10.7")
    assert ident(b"@RSYNCD: 31.0\n").extrainfo == "protocol 31.0"
    es = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"name":"n","cluster_name":"lab",'
    es += b'"version":{"number":"8.11.1","build_flavor":"default"},"tagline":"You Know, for Search"}'
    found = ident(es, "http-get")
    assert (found.product, found.version, found.extrainfo) == (
        "Elasticsearch REST API",
        "8.11.1",
        "cluster lab",
    )
    jenkins = ident(
        b"HTTP/1.1 403 Forbidden\r\nX-Jenkins: 2.426.1\r\nServer: Jetty(10.0.18)\r\n\r\n", "http-get"
    )
    assert (jenkins.product, jenkins.version) == ("Jenkins", "2.426.1")
    zk_reply = (
        b"Zookeeper version: 3.8.3-6ad6d36, built on 2023\nLatency min/avg/max: 0/0.0/0\nMode: standalone\n"
    )
    zk = ident(zk_reply, "zookeeper-srvr")
    assert (zk.product, zk.version, zk.extrainfo) == ("Apache ZooKeeper", "3.8.3", "standalone")


def test_amqp_connection_start() -> None:
    # Connection.Start (class 10, method 10), version 0-9, server-properties as a field table
    def longstr(key: bytes, value: bytes) -> bytes:
        return bytes([len(key)]) + key + b"S" + struct.pack(">I", len(value)) + value

    table = longstr(b"cluster_name", b"rabbit@lab") + longstr(b"product", b"RabbitMQ")
    table += longstr(b"version", b"3.12.1")
    payload = b"\x00\x0a\x00\x0a\x00\x09" + struct.pack(">I", len(table)) + table
    frame = b"\x01\x00\x00" + struct.pack(">I", len(payload)) + payload + b"\xce"
    found = ident(frame, "amqp-header")
    assert (found.service, found.product, found.version) == ("amqp", "RabbitMQ", "3.12.1")


def test_cpes_are_kept_one_per_part_and_escaped_as_nmap_does() -> None:
    """nmap keeps the last CPE of each part (a, h, o) a rule gives, in that order, and makes
    matched text safe inside the URI (reserved characters %-escaped, blanks '_', lower case)."""
    from portkit.services._match import _apply

    rule = parse_match_line(
        "match ssh m|^SSH-([\\d.]+)-OpenSSH_([\\w.]+) (\\S+ \\S+)\\r\\n| p/OpenSSH/ v/$2/ "
        "cpe:/o:debian:debian_linux/ cpe:/a:openbsd:openssh:$2/ cpe:/o:linux:linux_kernel/a "
        "cpe:/h:acme:$3/"
    )
    assert rule is not None
    found = _apply(rule, "NULL", b"SSH-2.0-OpenSSH_9.2p1 Box (R)1\r\n")
    assert found is not None
    assert found.cpe == (
        "cpe:/a:openbsd:openssh:9.2p1", "cpe:/h:acme:box_%28r%291", "cpe:/o:linux:linux_kernel"
    )
