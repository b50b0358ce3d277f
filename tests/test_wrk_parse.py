"""wrk's text report, parsed from real captures (wrk debian/4.1.0-3+b2, this machine).

Each sample is verbatim output of `taskset -c 1 wrk -t1 -c<N> -d<T>s --latency <url>` against
a small asyncio server that answered 200, 503, closed sockets, stalled or never answered;
the one with statuses ran with `-s status.lua` against a server answering one in four 429.
"""

from __future__ import annotations

import itertools
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from tiny_http import serving

from generator.harness.wrk import (
    REALTIME_PRIORITY,
    WrkError,
    parse_wrk,
    run_wrk,
    wrk_command,
)

CLEAN = """\
Running 2s test @ http://127.0.0.1:18765/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   264.26us  102.04us   2.35ms   94.12%
    Req/Sec    61.18k     7.17k   66.35k    90.00%
  Latency Distribution
     50%  241.00us
     75%  263.00us
     90%  322.00us
     99%  500.00us
  121424 requests in 2.00s, 4.63MB read
Requests/sec:  60692.97
Transfer/sec:      2.32MB
"""

# 30% answered 503, 5% of connections aborted by the server.
READ_ERRORS_AND_503 = """\
Running 2s test @ http://127.0.0.1:18765/mixed
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   302.23us  135.99us   3.11ms   91.73%
    Req/Sec    50.53k     4.96k   55.22k    85.00%
  Latency Distribution
     50%  272.00us
     75%  314.00us
     90%  398.00us
     99%  763.00us
  100439 requests in 2.00s, 4.34MB read
  Socket errors: connect 0, read 3692, write 0, timeout 0
  Non-2xx or 3xx responses: 31153
Requests/sec:  50208.83
Transfer/sec:      2.17MB
"""

# 10% of requests stalled 3 s against `--timeout 1s`.
TIMEOUTS = """\
Running 4s test @ http://127.0.0.1:18765/slow
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   174.05us  109.70us 614.00us   84.44%
    Req/Sec   654.33    742.09     1.48k    66.67%
  Latency Distribution
     50%  167.00us
     75%  207.00us
     90%  269.00us
     99%  597.00us
  318 requests in 4.01s, 12.42KB read
  Socket errors: connect 0, read 0, write 0, timeout 16
Requests/sec:     79.30
Transfer/sec:      3.10KB
"""

# Half the requests took 1.2 s: wrk switches to seconds and pads the unit with a space.
SECONDS_UNIT = (
    "Running 3s test @ http://127.0.0.1:18765/slow2\n"
    "  1 threads and 8 connections\n"
    "  Thread Stats   Avg      Stdev     Max   +/- Stdev\n"
    "    Latency   583.17ms  609.94ms   1.20s    51.52%\n"
    "    Req/Sec    42.33     58.60   110.00     66.67%\n"
    "  Latency Distribution\n"
    "     50%    1.14ms\n"
    "     75%    1.20s \n"
    "     90%    1.20s \n"
    "     99%    1.20s \n"
    "  33 requests in 3.01s, 1.29KB read\n"
    "Requests/sec:     10.98\n"
    "Transfer/sec:     439.04B\n"
)

# The server accepted and never answered: no request completed, statistics are -nan.
NOTHING_ANSWERED = """\
Running 2s test @ http://127.0.0.1:18767/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 2.00s, 0.00B read
Requests/sec:      0.00
Transfer/sec:       0.00B
"""

# The server answered 500s, then closed its listener and aborted every connection.
WRITE_ERRORS_ALL_500 = """\
Running 2s test @ http://127.0.0.1:18768/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   115.11us   66.12us   2.08ms   95.84%
    Req/Sec    63.73k    18.24k   73.70k    88.89%
  Latency Distribution
     50%  106.00us
     75%  117.00us
     90%  133.00us
     99%  230.00us
  56874 requests in 2.00s, 3.20MB read
  Socket errors: connect 0, read 8, write 63338, timeout 0
  Non-2xx or 3xx responses: 56874
Requests/sec:  28432.21
Transfer/sec:      1.60MB
"""


# One answer in four a 429, counted by status.lua (the latencies on its line are those of the
# 200s, an upper bound; wrk's own lines mix both).
WITH_STATUSES = """\
Running 1s test @ http://127.0.0.1:18999/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    42.10ms    8.22ms  47.97ms   95.65%
    Req/Sec    92.20     19.65   121.00     70.00%
  Latency Distribution
     50%   43.74ms
     75%   43.96ms
     90%   44.04ms
     99%   47.97ms
  92 requests in 1.00s, 10.94KB read
  Non-2xx or 3xx responses: 23
Requests/sec:     91.95
Transfer/sec:     10.93KB
""" + (
    'BULWARK_STATUSES {"statuses": {"200": 69, "429": 23}, "expected": 69, "p50_ms": 43.881, '
    '"p75_ms": 43.984, "p90_ms": 44.198, "p99_ms": 47.972}\n'
)


def test_clean_run() -> None:
    result = parse_wrk(CLEAN)
    assert result.requests == 121424
    assert result.duration_s == pytest.approx(2.0)
    assert result.rps == pytest.approx(60692.97)
    assert result.p50_ms == pytest.approx(0.241)
    assert result.p75_ms == pytest.approx(0.263)
    assert result.p90_ms == pytest.approx(0.322)
    assert result.p99_ms == pytest.approx(0.5)
    assert result.errors == 0


def test_read_errors_and_bad_statuses_add_up() -> None:
    result = parse_wrk(READ_ERRORS_AND_503)
    assert (result.connect_errors, result.read_errors, result.write_errors) == (0, 3692, 0)
    assert result.timeout_errors == 0
    assert result.non_2xx_3xx == 31153
    assert result.errors == 3692 + 31153
    assert result.rps == pytest.approx(50208.83)


def test_timeouts_count_as_errors() -> None:
    result = parse_wrk(TIMEOUTS)
    assert result.timeout_errors == 16
    assert result.non_2xx_3xx == 0
    assert result.errors == 16
    assert result.duration_s == pytest.approx(4.01)


def test_write_errors_and_all_500() -> None:
    result = parse_wrk(WRITE_ERRORS_ALL_500)
    assert (result.read_errors, result.write_errors) == (8, 63338)
    assert result.non_2xx_3xx == result.requests == 56874
    assert result.errors == 8 + 63338 + 56874


def test_status_counts_parse_and_only_expected_answers_are_throughput() -> None:
    result = parse_wrk(WITH_STATUSES)
    assert result.statuses == {200: 69, 429: 23}
    assert (result.requests, result.expected, result.good) == (92, 69, 69)
    assert result.rps == pytest.approx(91.95)  # wrk's, refusals included
    assert result.good_rps == pytest.approx(69.0)
    assert (result.p50_ms, result.p99_ms) == (43.881, 47.972)  # the script's, not wrk's
    assert result.unexpected == 23
    assert result.error_share == pytest.approx(23 / 92)


def test_uncounted_runs_treat_non_2xx_as_unexpected() -> None:
    result = parse_wrk(READ_ERRORS_AND_503)
    assert result.statuses == {}
    assert result.expected is None
    assert result.good == result.requests - 31153
    assert result.unexpected == 31153 + 3692


def test_no_expected_answer_keeps_wrk_latencies() -> None:
    marker = WITH_STATUSES.splitlines()[-1]
    none_good = marker.replace('"expected": 69', '"expected": 0').replace("43.881", "-1.000")
    result = parse_wrk(WITH_STATUSES.replace(marker, none_good))
    assert (result.good, result.good_rps) == (0, 0.0)
    assert result.p50_ms == pytest.approx(43.74)


def test_millisecond_and_second_units() -> None:
    result = parse_wrk(SECONDS_UNIT)
    assert result.p50_ms == pytest.approx(1.14)
    assert result.p75_ms == pytest.approx(1200.0)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.requests == 33


def test_nothing_answered_parses_as_zero() -> None:
    result = parse_wrk(NOTHING_ANSWERED)
    assert (result.requests, result.rps, result.p99_ms, result.errors) == (0, 0.0, 0.0, 0)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("unable to connect to 127.0.0.1:18766 Connection refused\n", id="refused"),
        pytest.param(
            CLEAN.replace("  Latency Distribution\n", "").replace("     99%  500.00us\n", ""),
            id="no --latency percentiles",
        ),
        pytest.param(CLEAN.replace("Requests/sec:  60692.97\n", ""), id="no rps line"),
    ],
)
def test_unreadable_reports_raise(text: str) -> None:
    with pytest.raises(WrkError, match="unreadable wrk report"):
        parse_wrk(text)


def test_command_pins_one_thread_to_the_given_core() -> None:
    assert wrk_command("http://127.0.0.1:8000/health", duration_s=10, connections=64, cpu=1) == [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c64",
        "-d10s",
        "--latency",
        "http://127.0.0.1:8000/health",
    ]


def test_a_realtime_command_runs_wrk_in_the_round_robin_class() -> None:
    command = wrk_command("http://x/", duration_s=1, connections=1, cpu=1, realtime=True)
    assert command[:4] == ["chrt", "--rr", str(REALTIME_PRIORITY), "taskset"]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_a_refused_connection_is_a_wrk_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(WrkError, match="exited with 1: unable to connect"):
            run_wrk(f"http://127.0.0.1:{port}/", duration_s=1, connections=1, cpu=1)


@contextmanager
def one_in_four_refused() -> Iterator[int]:
    """A keep-alive HTTP server answering 429 to every fourth request; yields its port."""
    counter = itertools.count()
    with serving(lambda _: (429 if next(counter) % 4 == 0 else 200, b"ok")) as port:
        yield port


@pytest.mark.load
@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_status_lua_counts_every_answer_by_status() -> None:
    with one_in_four_refused() as port:
        result = run_wrk(f"http://127.0.0.1:{port}/", duration_s=1, connections=2, cpu=1)
    assert sum(result.statuses.values()) == result.requests > 0
    assert set(result.statuses) == {200, 429}
    assert result.good == result.statuses[200]
    assert result.statuses[429] == result.non_2xx_3xx
    with one_in_four_refused() as port:
        both = run_wrk(
            f"http://127.0.0.1:{port}/", duration_s=1, connections=2, cpu=1, expect=(200, 429)
        )
    assert both.good == both.requests
    assert both.unexpected == 0
