"""``bento completion bash|zsh``: a shell completion script, generated from the parser.

The script is static: it knows every command, action and option, and the choices of
options that have them, so pressing Tab never starts Python. Other words complete as
file names. zsh runs the same function through its bash compatibility layer
(``bashcompinit``), so both shells complete alike.

    eval "$(bento completion bash)"     # in ~/.bashrc
    eval "$(bento completion zsh)"      # in ~/.zshrc
"""

from __future__ import annotations

import argparse
import shlex

from bento.cli.main import COMMANDS, build_parser


def add_completion(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        'Print a completion script for bash or zsh. Load it with eval "$(bento completion bash)" '
        "in ~/.bashrc (or zsh in ~/.zshrc)."
    )
    parser.add_argument("shell", choices=["bash", "zsh"])
    parser.set_defaults(handler=cmd_completion)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]]]:
    """Every option string of ``parser``, and the choices of those that take one of a few."""
    flags: list[str] = []
    choices: dict[str, list[str]] = {}
    for action in parser._actions:
        flags += action.option_strings
        if action.option_strings and action.choices:
            for flag in action.option_strings:
                choices[flag] = [str(c) for c in action.choices]
    return flags, choices


def _words(words: list[str]) -> str:
    return shlex.quote(" ".join(words))


def bash_function() -> str:
    parser = build_parser()
    commands = _subparsers(parser)
    cases = []
    for name in COMMANDS:
        command = commands[name]
        actions = _subparsers(command)
        flags, choices = _options(command)
        positional = [
            str(c) for a in command._actions if not a.option_strings and a.choices for c in a.choices
        ]
        lines = [f"        {name})"]
        if actions:  # a command with actions of its own: `bento testnet up ...`
            lines.append(f"            if [[ -z $action ]]; then words={_words([*actions, *flags])}")
            lines.append("            else case $action in")
            for action_name, action in actions.items():
                action_flags, action_choices = _options(action)
                lines.append(f"                {action_name}) words={_words(action_flags)};;")
                choices.update(action_choices)
            lines.append("            esac; fi")
        else:
            lines.append(f"            words={_words([*positional, *flags])}")
        for flag, values in choices.items():
            lines.append(f'            [[ $prev == {flag} ]] && words={_words(values)} && files=""')
        lines.append("            ;;")
        cases.append("\n".join(lines))
    top_flags, _ = _options(parser)
    return f"""_bento() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local command="" action="" words="" files=1 i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            -*) ;;
            *) if [[ -z $command ]]; then command=${{COMP_WORDS[i]}}
               elif [[ -z $action ]]; then action=${{COMP_WORDS[i]}}; fi ;;
        esac
    done
    case $command in
        "") words={_words([*COMMANDS, *top_flags])}; files="" ;;
{chr(10).join(cases)}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if [[ ${{#COMPREPLY[@]}} -eq 0 && -n $files && $cur != -* ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
"""


def script(shell: str) -> str:
    head = f'# bento completion for {shell}: eval "$(bento completion {shell})"\n'
    if shell == "zsh":
        head += "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n"
    return f"{head}{bash_function()}complete -F _bento bento\n"


def cmd_completion(args: argparse.Namespace) -> int:
    print(script(args.shell), end="")
    return 0
