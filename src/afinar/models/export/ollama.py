"""``--format ollama``: the GGUF plus a ``Modelfile``: ``FROM ./model.gguf``, a ``TEMPLATE`` in
Ollama's Go-template syntax derived from the model's chat template, ``PARAMETER stop`` lines for
its end-of-turn tokens, the job's system prompt (when it has one) and the model's recommended
sampling. The TEMPLATE is derived by rendering probe conversations with the Hugging Face template
(per-role prefix and suffix around the content, the default system block, the generation prompt)
and is then checked by rendering the sample conversations with both (``verify``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from afinar.models.export.formats import EXPORTERS, Check
from afinar.models.export.gguf_format import GGUF, GGUFExporter
from afinar.models.export.gotemplate import TemplateError, ollama_data, render
from afinar.models.export.source import EXPORT_MANIFEST, ExportFailed, Source
from afinar.models.export.verify import conversations

MODELFILE = "Modelfile"
# Ollama's names for the Hugging Face generation settings
_PARAMS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
           "repetition_penalty": "repeat_penalty"}
_PROBE = "\x01PROBE\x02"


def _render(tok, msgs, gen=False) -> str:
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


def _after(longer: str, prefix: str, what: str) -> str:
    if not longer.startswith(prefix):
        raise ExportFailed(f"the chat template cannot be written as an Ollama template ({what} "
                           "changes what comes before it)")
    return longer[len(prefix):]


def _wrap(block: str, role: str) -> tuple[str, str]:
    if block.count(_PROBE) != 1:
        raise ExportFailed(f"the chat template cannot be written as an Ollama template (the "
                           f"{role} content is not rendered once as it is)")
    pre, post = block.split(_PROBE)
    return pre, post


def go_template(tok) -> str:
    """An Ollama TEMPLATE that renders what ``tok``'s chat template renders."""
    system_only = _render(tok, [{"role": "system", "content": _PROBE}])
    sys_pre, sys_post = _wrap(system_only, "system")
    base = [{"role": "system", "content": "s"}]
    base_text = _render(tok, base)
    roles = {}
    for role in ("user", "assistant"):
        block = _after(_render(tok, base + [{"role": role, "content": _PROBE}]), base_text, role)
        roles[role] = _wrap(block, role)
    user_only = _render(tok, [{"role": "user", "content": _PROBE}])
    default_system = user_only[:len(user_only) - len("".join(roles["user"])) - len(_PROBE)]
    if default_system + roles["user"][0] + _PROBE + roles["user"][1] != user_only:
        raise ExportFailed("the chat template cannot be written as an Ollama template (its "
                           "default system message is not a fixed prefix)")
    convo = base + [{"role": "user", "content": "u"}]
    gen = _after(_render(tok, convo, True), _render(tok, convo), "the generation prompt")
    parts = [sys_pre, sys_post, default_system, gen, *roles["user"], *roles["assistant"]]
    if any("{{" in p or "}}" in p for p in parts):
        raise ExportFailed("the chat template's text holds {{ or }}: not writable as an Ollama "
                           "template")
    upre = roles["user"][0]
    other = (upre.replace("user", "{{ $m.Role }}", 1) if upre.count("user") == 1 else upre)
    c = "{{ $m.Content }}"
    return (
        '{{- range $i, $m := .Messages }}'
        + (f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{default_system}{{{{ end }}}}'
           if default_system else "")
        + f'{{{{ if eq $m.Role "system" }}}}{sys_pre}{c}{sys_post}'
        + f'{{{{ else if eq $m.Role "user" }}}}{upre}{c}{roles["user"][1]}'
        + f'{{{{ else if eq $m.Role "assistant" }}}}{roles["assistant"][0]}{c}'
          f'{roles["assistant"][1]}'
        + f'{{{{ else }}}}{other}{c}{roles["user"][1]}{{{{ end }}}}'
        + '{{ if and (eq (len (slice $.Messages $i)) 1) (ne $m.Role "assistant") }}'
        + f'{gen}{{{{ end }}}}'
        + '{{ end }}'
    )


def _quote(s: str) -> str:
    if '"""' in s:
        raise ExportFailed('text with """ cannot be written in a Modelfile')
    return f'"""{s}"""'


def modelfile(tok, stop_tokens: list[str], system: str | None, sampling: dict) -> str:
    lines = [f"FROM ./{GGUF}", f"TEMPLATE {_quote(go_template(tok))}"]
    lines += [f"PARAMETER stop {json.dumps(t)}" for t in stop_tokens]
    lines += [f"PARAMETER {_PARAMS[k]} {v}" for k, v in sampling.items() if k in _PARAMS]
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict:
    """FROM, TEMPLATE, SYSTEM and PARAMETER lines (``parameters``: name -> list of values)."""
    out: dict = {"parameters": {}}
    pos = 0
    for m in re.finditer(r'^(FROM|TEMPLATE|SYSTEM|PARAMETER)[ \t]+', text, re.M):
        if m.start() < pos:
            continue  # inside a triple-quoted value
        key, rest = m.group(1), text[m.end():]
        if rest.startswith('"""'):
            end = rest.find('"""', 3)
            if end < 0:
                raise ExportFailed(f'the Modelfile\'s {key} has no closing """')
            val, pos = rest[3:end], m.end() + end + 3
        else:
            val = rest.split("\n", 1)[0].strip()
            pos = m.end() + len(val)
        if key == "PARAMETER":
            name, _, v = val.partition(" ")
            v = v.strip()
            out["parameters"].setdefault(name, []).append(
                json.loads(v) if v.startswith('"') else v)
        else:
            out[key.lower()] = val
    return out


@EXPORTERS.register()
class OllamaExporter(GGUFExporter):
    name = "ollama"
    help = "GGUF + Modelfile (ollama create NAME -f Modelfile)"

    def export(self, src: Source, out: Path, quant: str, work: Path) -> None:
        from afinar.models.catalog import Catalog

        super().export(src, out, quant, work)
        tok = src.tokenizer()
        fp = src.fingerprint()
        sampling = Catalog(src.settings).sampling_defaults(src.model_id)
        (out / MODELFILE).write_text(modelfile(tok, fp["stop_tokens"], src.system_prompt(),
                                               sampling))
        data = json.loads((out / EXPORT_MANIFEST).read_text())
        (out / EXPORT_MANIFEST).write_text(json.dumps({**data, "modelfile": MODELFILE,
                                                       "system": src.system_prompt(),
                                                       "sampling": sampling}, indent=1))

    def checks(self, path: Path, src: Source, data: dict, hf: Path | None) -> list[Check]:
        return [*super().checks(path, src, data, hf),
                *check_modelfile(path, src, data["template_fingerprint"])]


def template_renders_as(template: str, system: str | None, tok) -> Check:
    """An Ollama TEMPLATE (with its SYSTEM where a conversation has none, as Ollama does)
    renders the sample conversations as ``tok``'s chat template does."""
    for i, (msgs, _) in enumerate(conversations()[:3]):
        if system and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": system}, *msgs]
        want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        try:
            got = render(template, ollama_data(msgs, system))
        except TemplateError as e:
            return Check("Modelfile TEMPLATE", False, e.message)
        if got != want:
            return Check("Modelfile TEMPLATE", False, f"sample conversation {i + 1} renders "
                         f"{got!r}, the chat template renders {want!r}")
    return Check("Modelfile TEMPLATE", True, "renders the samples as the chat template")


def check_modelfile(path: Path, src: Source, fp: dict) -> list[Check]:
    """FROM names the GGUF beside it, ``PARAMETER stop`` lines are the end-of-turn tokens, the
    TEMPLATE renders what the model was trained on."""
    mf = parse_modelfile((path / MODELFILE).read_text())
    checks = []
    if mf.get("from") != f"./{GGUF}" or not (path / GGUF).is_file():
        checks.append(Check("Modelfile", False, f"FROM is not ./{GGUF} beside it"))
    stops = mf["parameters"].get("stop", [])
    checks.append(Check("Modelfile stop", sorted(stops) == sorted(fp["stop_tokens"]),
                        f"{stops}, end-of-turn tokens {fp['stop_tokens']}"))
    return [*checks, template_renders_as(mf.get("template", ""), mf.get("system"),
                                         src.tokenizer())]
