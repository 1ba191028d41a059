"""The built-in `offline` provider: the deterministic local model of `daydream.offline_model`,
no network, no key, no cost. Its reply for each stage comes from the stage registry."""

from __future__ import annotations

from daydream import offline_model
from daydream.providers import CallRequest, Reply, RetryDecision


class OfflineProvider:
    name = "offline"

    @staticmethod
    def key_env_var(row, route: str) -> str | None:
        return None

    def complete(self, request: CallRequest) -> Reply:
        text, usage = offline_model.generate(request.prompt, stage=request.stage, model=request.row.model,
                                             replicate=request.replicate)
        return Reply(text, "stop", usage)

    async def acomplete(self, request: CallRequest) -> Reply:
        return self.complete(request)

    def errors(self) -> tuple[type[BaseException], ...]:
        return ()

    def retry_decision(self, error: BaseException) -> RetryDecision | None:
        return None

    def cost_usd(self, row, reply: Reply) -> float | None:
        return 0.0
