"""`provisioning completion bash|zsh|fish`: the shell code that completes the command's
words, Click's own, printed to be sourced:

    source <(provisioning completion bash)       # ~/.bashrc
    provisioning completion zsh > "${fpath[1]}/_provisioning"
    provisioning completion fish > ~/.config/fish/completions/provisioning.fish
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

#: The variable Click's completion scripts set when they ask the command for words.
COMPLETE_VARIABLE = "_PROVISIONING_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print SHELL's completion code for `provisioning` (source it from the shell's rc)."""
    shell_class = get_completion_class(shell)
    assert shell_class is not None  # the three choices are Click's own
    root = ctx.find_root()
    name = root.info_name or "provisioning"
    click.echo(shell_class(root.command, {}, name, COMPLETE_VARIABLE).source())
