"""Run commands on the orchestrator's host, confined to the task's workspace.

One action, `run`, executes an argument list (never a shell) in its own session, so
that the whole process group can be stopped on cancellation, on timeout, or by a later
orchestrator through `reap`. Output (stdout and stderr interleaved) is kept up to a
bound, tail first. Processes the command leaves running in the background once it has
exited are not killed, as a shell would not kill them.

`PR_SET_PDEATHSIG` is deliberately not used: any `preexec_fn` makes CPython fork
instead of vfork, which made spawning about three times slower; `reap` covers the case
of an orchestrator that died while a command ran.

With `record_exit = true`, each command runs under a fixed `/bin/sh` wrapper (the
command's own arguments are passed as arguments, never parsed by the shell) that writes
its exit status to `<state_dir>/<task id>.<attempt>.exit` when it ends, whether or not
its orchestrator is still alive. An attempt whose orchestrator or worker was killed is
then recorded from that file (`finished`) instead of being run again: exactly once for
commands that finished, at the cost of one more process per command. Files are kept
(a few bytes each) for seven days: a worker taking over an expired lease may need the
file of an attempt whose end its first worker had not committed yet.
"""

from providers.local._provider import LocalProvider

__all__ = ["LocalProvider"]
