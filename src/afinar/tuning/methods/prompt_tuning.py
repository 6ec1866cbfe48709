"""Prompt tuning (Lester et al. 2021) through PEFT: trained virtual tokens before the input."""

from __future__ import annotations

from pydantic import Field

from afinar.tuning.methods.base import BuildContext, Method, MethodConfig, register


class PromptTuningOptions(MethodConfig):
    num_virtual_tokens: int = Field(16, ge=1, le=512)
    init_text: str | None = Field("Answer the user's request in the expected format.",
                                  description="initialise from this text (None: random)")


@register
class PromptTuning(Method):
    name = "prompt_tuning"
    base_lr = 3e-2
    config_cls = PromptTuningOptions
    full_forward = True
    # virtual tokens prepended by PEFT's forward: not weights a LoRA host can hold next to
    # other adapters, nor anything to merge into the base
    artifact = "prompt"
    shares_base = False
    mergeable = False

    def build(self, model, ctx: BuildContext):
        from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

        o = self.config
        kw = {}
        if o.init_text:
            kw = dict(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=o.init_text,
                      tokenizer_name_or_path=str(ctx.model_dir))
        return get_peft_model(model, PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=o.num_virtual_tokens, **kw))
