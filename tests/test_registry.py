from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit import Protocol, Registry, Source, UsageError, import_iana
from portkit.registry._cache import load_cache
from portkit.registry.builtin import load_builtin
from portkit.registry.nmap import find_nmap_services, parse_nmap_services
from portkit.registry.system import parse_etc_services


def test_builtin_table_is_broad_and_well_formed() -> None:
    services = load_builtin()
    names = {s.name for s in services}
    assert len(names) >= 300
    assert {"ssh", "https", "telnet", "redis", "postgresql", "rdp"} <= names
    for s in services:
        assert 0 <= s.port <= s.last_port <= 65535
        assert s.description and s.category and 1 <= s.commonness <= 5


@pytest.mark.parametrize(
    ("port", "proto", "name", "alternative_mentions"),
    [
        (23, "tcp", "telnet", "22"),
        (21, "tcp", "ftp", "sftp"),
        (2375, "tcp", "docker", "2376"),
        (110, "tcp", "pop3", "995"),
        (143, "tcp", "imap", "993"),
        (80, "tcp", "http", "443"),
    ],
)
def test_risky_ports_name_the_safer_alternative(
    port: int, proto: str, name: str, alternative_mentions: str
) -> None:
    risk = Registry().risk_for(port, Protocol(proto))
    assert risk is not None and risk.name == name
    assert alternative_mentions in risk.alternative


@pytest.mark.parametrize("port", [6379, 27017, 9200, 11211, 3389, 5900])
def test_exposure_sensitive_ports_carry_a_risk_note(port: int) -> None:
    assert Registry().risk_for(port, Protocol.TCP) is not None


def test_etc_services_parser_reads_aliases_and_comments() -> None:
    text = "# c\nssh\t\t22/tcp\t\t\t# SSH Remote Login\nsmtp 25/tcp mail\nbogus 99999/tcp\nx 5/ddp\n"
    services = parse_etc_services(text)
    assert [(s.name, s.port, s.aliases) for s in services] == [("ssh", 22, ()), ("smtp", 25, ("mail",))]
    assert services[0].description == "SSH Remote Login"


def test_nmap_services_parser_keeps_frequencies() -> None:
    text = "# header\nhttp\t80/tcp\t0.484143\t# World Wide Web HTTP\nfoo\t9/udp\tbad\n"
    (s,) = parse_nmap_services(text)
    assert (s.name, s.port, s.frequency, s.source) == ("http", 80, 0.484143, Source.NMAP)


def test_top_ports_follow_nmap_frequencies_when_installed() -> None:
    def nmap() -> list:  # type: ignore[type-arg]
        return parse_nmap_services("a\t10/tcp\t0.1\nb\t20/tcp\t0.9\nc\t30/tcp\t0.5\nd\t40/udp\t0.9\n")

    registry = Registry([(Source.NMAP, nmap)])
    assert registry.top_ports(3, Protocol.TCP) == [20, 30, 10]
    assert registry.top_ports(5, Protocol.TCP)[:3] == [20, 30, 10]
    assert len(registry.top_ports(5, Protocol.TCP)) == 5


def test_top_ports_fall_back_to_the_builtin_ranking() -> None:
    registry = Registry([(Source.BUILTIN, load_builtin), (Source.NMAP, list)])
    top = registry.top_ports(20, Protocol.TCP)
    assert len(top) == len(set(top)) == 20
    assert {22, 80, 443} <= set(top)


def test_iana_import_accounts_for_every_record(iana_csv: Path, isolated_cache: Path) -> None:
    report = import_iana(iana_csv)
    assert report.records == 14447
    assert report.imported + report.skipped_total == 14447
    assert report.imported > 11000
    assert report.skipped["unassigned"] > 0 and report.skipped["reserved"] > 0
    assert report.skipped["no port number (service name only)"] > 0
    cached = load_cache()
    assert len(cached) == report.imported
    assert Path(report.cache).parent == isolated_cache
    # a range row and a multi-line description survive the trip
    assert any(s.port == 6000 and s.last_port == 6063 for s in cached)
    assert all("\n" not in s.description for s in cached)


def test_lookups_answer_from_iana_after_import(iana_csv: Path) -> None:
    def empty() -> list:  # type: ignore[type-arg]
        return []

    before = Registry([(Source.IANA, load_cache)])
    assert before.for_port(8883, Protocol.TCP) == []
    import_iana(iana_csv)
    after = Registry([(Source.IANA, load_cache), (Source.NMAP, empty)])
    names = {s.name for s in after.for_port(8883, Protocol.TCP)}
    assert "secure-mqtt" in names
    assert all(s.source is Source.IANA for s in after.for_port(8883, Protocol.TCP))
    assert (5432, Protocol.TCP) in after.ports_for_name("postgresql")


def test_iana_xml_format_is_read(tmp_path: Path) -> None:
    xml = tmp_path / "reg.xml"
    xml.write_text(
        '<?xml version="1.0"?><registry xmlns="http://www.iana.org/assignments">'
        "<record><name>ssh</name><protocol>tcp</protocol><description>The Secure Shell\n (SSH) Protocol"
        "</description><number>22</number></record>"
        "<record><protocol>udp</protocol><description>Unassigned</description><number>4</number></record>"
        "<record><name>x11</name><protocol>tcp</protocol><description>X Window System</description>"
        "<number>6000-6063</number></record></registry>"
    )
    report = import_iana(xml)
    assert (report.records, report.imported, dict(report.skipped)) == (3, 2, {"unassigned": 1})
    assert any(s.last_port == 6063 for s in load_cache())


def test_import_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        import_iana(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(UsageError, match="not an IANA port registry CSV"):
        import_iana(bad)


def test_search_finds_by_keyword_and_ranks_exact_names_first() -> None:
    registry = Registry()
    assert registry.search("ssh")[0].name == "ssh"
    assert any(s.port == 3389 for s in registry.search("remote desktop"))
    assert any(s.port == 5432 for s in registry.search("postgres"))


record_fields = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    record_fields,
    st.one_of(record_fields, st.from_regex(r"\d{1,6}(-\d{1,6})?", fullmatch=True)),
    record_fields,
)
def test_every_iana_record_is_imported_or_skipped_with_a_reason(name: str, number: str, proto: str) -> None:
    from portkit.registry.iana import IanaRecord, judge_record

    services, reason = judge_record(IanaRecord(name, number, proto.lower(), "desc"))
    assert bool(services) != bool(reason)
    for s in services:
        assert 0 <= s.port <= s.last_port <= 65535


@pytest.mark.parametrize(("port", "name"), [(22, "ssh"), (443, "https"), (80, "http"), (5432, "postgresql")])
def test_name_for_picks_the_most_common_service_on_a_port(port: int, name: str) -> None:
    assert Registry().name_for(port, Protocol.TCP) == name


@pytest.mark.skipif(find_nmap_services() is None, reason="nmap is not installed (ranks top:N)")
@pytest.mark.parametrize("protocol", [Protocol.TCP, Protocol.UDP])
def test_fast_top_ports_equal_the_fully_parsed_ranking(protocol: Protocol) -> None:
    fast = Registry().top_ports(1000, protocol)
    loaded = Registry()
    loaded.layer(Source.NMAP)  # forces the full parse
    assert fast == loaded.top_ports(1000, protocol)
    assert len(set(fast)) == 1000


def test_per_port_queries_answer_as_the_loaded_layers_do() -> None:
    """The first questions read one port's lines, later ones the parsed index: same answers."""
    from portkit.registry._registry import QUERIES_BEFORE_LOAD

    def answers(registry: Registry, port: int) -> tuple[object, ...]:
        found = tuple(
            sorted(
                (s.source.value, s.name, s.port, s.last_port, s.protocol.value)
                for s in registry.for_port(port, Protocol.TCP)
            )
        )
        return found, registry.name_for(port, Protocol.TCP)

    sample = [1, 7, 21, 22, 23, 25, 53, 80, 110, 443, 445, 3306, 5432, 6379, 8080, 27017, 50000, 65535]
    querying = Registry()
    loaded = Registry()
    for layer in loaded._layers:
        layer.load()
    for port in sample:
        assert answers(querying, port) == answers(loaded, port), port
    # by now the querying registry has switched to its loaded index, and still agrees
    assert len(sample) * 2 > QUERIES_BEFORE_LOAD
    assert all(layer.loaded for layer in querying._layers)


def test_naming_every_port_is_fast() -> None:
    registry = Registry()
    started = time.perf_counter()
    names = [registry.name_for(port, Protocol.TCP) for port in range(1, 65536)]
    assert names[21] == "ssh"
    assert time.perf_counter() - started < 10  # was ~3 ms a port (over 3 minutes) before


def test_a_registry_reads_the_files_its_paths_name(tmp_path: Path) -> None:
    from portkit.registry import RegistryPaths
    from portkit.registry._cache import write_cache
    from portkit.registry.iana import ImportReport

    services = tmp_path / "nmap-services"
    services.write_text("made-up\t40001/tcp\t0.5\t# a test entry\n")
    cache_dir = tmp_path / "cache"
    paths = RegistryPaths(cache_dir=cache_dir, nmap_services=(tmp_path / "absent", services))
    write_cache(parse_nmap_services("iana-only 40002/tcp 0\n"), ImportReport(source="test"), paths.cache_file)
    registry = Registry(paths=paths)
    assert registry.name_for(40001, Protocol.TCP) == "made-up"
    iana = [s.name for s in registry.for_port(40002, Protocol.TCP) if s.source is Source.IANA]
    assert iana == ["iana-only"]
    assert registry.top_ports(1, Protocol.TCP) == [40001]
    bare = Registry(paths=RegistryPaths(cache_dir=tmp_path / "empty", nmap_services=()))
    assert bare.sources()["nmap-services"] == 0 and bare.sources()["iana"] == 0
    assert find_nmap_services(()) is None and find_nmap_services([services]) == services


def test_the_cli_maps_the_environment_onto_registry_paths(tmp_path: Path) -> None:
    from portkit.cli.main import registry_paths_from
    from portkit.registry import RegistryPaths

    default = RegistryPaths()
    home = default.cache_dir
    assert registry_paths_from({}) is None
    both = {"PORTKIT_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}
    assert registry_paths_from(both) == RegistryPaths(Path("/c"))
    assert registry_paths_from({"XDG_CACHE_HOME": "/x"}) == RegistryPaths(Path("/x/portkit"))
    assert registry_paths_from({"PORTKIT_NMAP_SERVICES": ""}) == RegistryPaths(home, ())
    assert registry_paths_from({"PORTKIT_NMAP_SERVICES": "/n"}) == RegistryPaths(home, (Path("/n"),))
    assert default.cache_file == Path.home() / ".cache" / "portkit" / "iana-services.tsv"


def test_the_process_wide_paths_choose_the_default_registry(tmp_path: Path) -> None:
    from portkit.registry import RegistryPaths, default_registry, registry_paths, use_registry_paths
    from portkit.registry.nmap import table_namer

    services = tmp_path / "nmap-services"
    services.write_text("made-up\t40001/tcp\t0.5\n")
    before, registry, namer = registry_paths(), default_registry(), table_namer()
    use_registry_paths(RegistryPaths(cache_dir=tmp_path, nmap_services=(services,)))
    try:
        assert default_registry() is not registry and table_namer() is not namer
        assert default_registry().name_for(40001, Protocol.TCP) == "made-up"
        assert table_namer()(40001, Protocol.TCP) == "made-up"
    finally:
        use_registry_paths(before)
    assert default_registry().name_for(40001, Protocol.TCP) != "made-up"


def test_search_for_a_port_number_lists_that_ports_services_first() -> None:
    """`portkit lookup 22` led with 1153/tcp c1222-acse ("ANSI C12.22"): a number is a port first."""
    found = Registry().search("22")
    assert found and found[0].port == 22
    first_other = next(i for i, s in enumerate(found) if not s.port <= 22 <= s.last_port)
    assert all(s.port <= 22 <= s.last_port for s in found[:first_other])
    assert any(s.name == "ssh" for s in found[:first_other])
