"""Load tests of the `recommend` ensemble: Locust files, session replay, SLA check, plots, runner.

    sessionrec loadtest --repository runs/repository --users 16 --run-time 30     # embedded server
    locust -f load_tests/locustfile.py --headless --host HOST:8001 ...             # any host

locustfile.py (gRPC, through sessionrec.clients) and http_locustfile.py (the naive baseline) share
common.py (options, users walking sessions, recording, SLA verdict as exit code); sessions.py, sla.py
and plot.py do not import Locust; runner.py runs Locust headless in a subprocess.
"""
