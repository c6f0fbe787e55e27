"""Run commands on the orchestrator's host, confined to the task's workspace.

One action, `run`, executes an argument list (never a shell) in its own session, so
that the whole process group can be stopped on cancellation, on timeout, or by a later
orchestrator through `reap`. Processes the command leaves running in the background
once it has exited are not killed, as a shell would not kill them.

Whoever submits it, a command reads nothing of the orchestrator's secrets
(`_isolation`): its environment is an allow-list (`env_allow`), not the orchestrator's;
as root it runs as an unprivileged user (`run_as`), otherwise in a bubblewrap sandbox,
and the orchestrator's data directory, configuration file and this provider's
`state_dir` are out of its reach.

Output (stdout and stderr interleaved) goes to a file, not a pipe (`Spool`): a command
outlives an orchestrator that dies while it prints, and the last `max_output_bytes` are
kept.

With `record_exit` (the default), each command runs under a fixed `/bin/sh` wrapper (the
command's own arguments are passed as arguments, never parsed by the shell) that:

- waits for the provider's go before it runs the command, given once the command's
  handle is recorded (`ActionCall.on_handle`), and runs nothing if the orchestrator
  dies first: a command is never started that a restarted orchestrator cannot find and
  stop, so never runs twice at once;
- writes the command's exit status to `<state_dir>/<task id>.<attempt>.exit` when it
  ends, whether or not its orchestrator is still alive, beside its output
  (`.out`). An attempt whose orchestrator or worker was killed is then recorded from
  these (`finished`) instead of being run again: exactly once for commands that
  finished, at the cost of one more process per command (the wrapper).

Without it (the fast mode) a command runs directly: a crash runs it again
(at least once), possibly while the first run still goes on if the crash came before its
handle was recorded.

`PR_SET_PDEATHSIG` is deliberately not used, nor `Popen`'s `user=`: any `preexec_fn` or
change of user makes CPython fork instead of vfork, which made spawning about three
times slower; `reap` covers the case of an orchestrator that died while a command ran,
and `setpriv` changes the user.
"""

from providers.local._provider import LocalProvider

__all__ = ["LocalProvider"]
