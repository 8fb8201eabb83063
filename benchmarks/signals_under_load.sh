#!/usr/bin/env bash
# The signal tests in a loop under load: two busy-looping processes take both cores of a 2-core machine
# while the Ctrl-C / SIGTERM / SIGKILL tests (one case at a time and --jobs), the killed-writer tests and the
# timed progress and resume-hint tests run ROUNDS times.
#     bash benchmarks/signals_under_load.sh [ROUNDS]      (default 5; run from the repo, in its venv)
set -u
cd "$(dirname "$0")/.."
rounds=${1:-5}
python3 -c "while True: pass" & b1=$!
python3 -c "while True: pass" & b2=$!
trap 'kill $b1 $b2 2>/dev/null' EXIT
pass=0
fail=0
for i in $(seq 1 "$rounds"); do
  if OMP_NUM_THREADS=1 timeout 900 python -m pytest -q -p no:cacheprovider -x \
      "tests/runner/test_jobs.py::test_ctrl_c_under_jobs_kills_every_running_worker_and_keeps_the_rest" \
      "tests/runner/test_jobs.py::test_jobs_pin_each_case_and_give_the_same_verdicts" \
      "tests/runner/test_interrupt_resume.py::test_sigint_sigterm_sigkill_then_resume" \
      "tests/runner/test_interrupt_resume.py::test_killed_writer_never_leaves_a_partial_results_file" \
      "tests/runner/test_interrupt_resume.py::test_negative_control_in_place_writer_is_caught" \
      "tests/runner/test_interrupt_resume.py::test_cli_interrupted_run_says_how_to_resume" \
      "tests/runner/test_interrupt_resume.py::test_cli_progress_lines_show_how_long_a_step_ran" > "/tmp/signals_round_$i.txt" 2>&1; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
  fi
  echo "round $i: $(tail -1 "/tmp/signals_round_$i.txt")"
done
echo "passed $pass of $rounds rounds"
[ "$fail" -eq 0 ]
