"""The two Midjourney proxy APIs (novicezk/midjourney-proxy and trueai-org/midjourney-proxy,
docs/provider-contracts.md section 5) as pure mappings: headers, paths, request bodies, submit
codes, task states, buttons and describe text. No I/O here; midjourney.py does the calls.

Differences that matter:
- auth: novicezk `mj-api-secret: <secret>` (401, empty body, when wrong); trueai
  `Authorization: <token>` (or `Mj-Api-Secret`).
- buttons: trueai tasks carry `buttons[]` and take `/mj/submit/action` {taskId, customId};
  novicezk has neither: it takes `/mj/submit/change` {taskId, action, index} for U1-U4,
  V1-V4 and reroll on grids, so its grid buttons are made here, in Midjourney's own
  customId shape, and parsed back when pressed.
- modes: trueai serves `/mj-fast`, `/mj-turbo`, `/mj-relax` prefixes; novicezk takes
  Midjourney's `--turbo` in the prompt.
- cancel: trueai `POST /mj/task/{id}/cancel`; novicezk has none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.base import ProviderError

NOVICEZK = "novicezk"
TRUEAI = "trueai"

# Submit codes (SubmitResultVO.code).
SUCCESS, NOT_FOUND, VALIDATION_ERROR, FAILURE, EXISTED, IN_QUEUE, QUEUE_REJECTED, BANNED_PROMPT = (
    1,
    3,
    4,
    9,
    21,
    22,
    23,
    24,
)
UPLOAD_PATH = "/mj/submit/upload-discord-images"  # trueai only
RUNNING_STATES = frozenset({"NOT_START", "SUBMITTED", "IN_PROGRESS"})
GRID_ACTIONS = frozenset({"IMAGINE", "VARIATION", "REROLL", "BLEND"})
# failReason wording is not documented; these are the words of Midjourney's refusals.
_REFUSAL = re.compile(
    r"banned|moderat|blocked|inappropriate|community guidelines|not allowed|sensitive|敏感|违规", re.I
)
_CHANGE = re.compile(r"^\s*(?:([UV])\s*([1-4])|(R|reroll|🔄))\s*$", re.I)
_CUSTOM = re.compile(r"^MJ::JOB::(upsample|variation|reroll)::(\d)::([^:]+)(?:::SOLO)?$")
_DESCRIBE_MARK = re.compile(r"\s*[1-4]\ufe0f?\u20e3\s*")
# provider_options -> the Midjourney parameter each one is (V7: docs/provider-contracts-2.md section 12).
OPTION_PARAMETERS = {"draft": "draft", "omni_weight": "ow", "exp": "exp"}
_HAS = {
    name: re.compile(rf"(?:^|\s)--{name}\b", re.I)
    for name in ("ar", "aspect", "no", "seed", "v", "version", "niji", "turbo", "oref", *OPTION_PARAMETERS.values())
}
# Catalog model id -> the Midjourney version parameter it promises.
VERSIONS = {"midjourney-v6": "6", "midjourney-turbo": "6", "midjourney-v7": "7"}
TURBO_MODELS = frozenset({"midjourney-turbo"})


@dataclass(frozen=True)
class Flavor:
    name: str

    @property
    def has_buttons(self) -> bool:
        return self.name == TRUEAI

    @property
    def can_cancel(self) -> bool:
        return self.name == TRUEAI

    @property
    def has_uploads(self) -> bool:
        """trueai's /mj/submit/upload-discord-images (an admin setting, EnableUserCustomUploadBase64)."""
        return self.name == TRUEAI

    def headers(self, secret: str) -> dict[str, str]:
        if not secret:
            return {}
        return {"Authorization": secret} if self.name == TRUEAI else {"mj-api-secret": secret}

    def prefix(self, model: str) -> str:
        """Path prefix of the speed mode (trueai mounts its routes under /mj-turbo etc.)."""
        return "/mj-turbo" if self.name == TRUEAI and model in TURBO_MODELS else ""


def of(name: str) -> Flavor:
    if name not in (NOVICEZK, TRUEAI):
        raise ValueError(f"unknown Midjourney proxy flavour {name!r}; use {NOVICEZK} or {TRUEAI}")
    return Flavor(name)


def imagine_prompt(
    generation: gen.Generation, flavor: Flavor, *, options: dict | None = None, omni_reference: str = ""
) -> str:
    """The client's prompt plus Midjourney parameters for what the gateway resolved: size,
    negative prompt, seed, version, speed, the omni reference (`--oref <url>`) and the
    client's provider_options (`--draft`, `--ow`, `--exp`). A parameter the prompt already
    has is left as the client wrote it."""
    params = generation.params
    prompt = params.prompt.strip()
    extra = []
    options = options or {}
    if "omni_weight" in options and not (omni_reference or _HAS["oref"].search(prompt)):
        raise ProviderError(ErrorCode.INVALID_REQUEST, "omni_weight needs an omni reference (image_url)")
    if omni_reference and not _HAS["oref"].search(prompt):
        extra.append(f"--oref {omni_reference}")
    for name, value in sorted(options.items()):
        flag = OPTION_PARAMETERS.get(name)
        if flag is None or _HAS[flag].search(prompt) or value is False:
            continue
        extra.append(f"--{flag}" if value is True else f"--{flag} {value}")
    size = params.size
    if ":" in size and size != "1:1" and not (_HAS["ar"].search(prompt) or _HAS["aspect"].search(prompt)):
        extra.append(f"--ar {size}")
    if params.negative_prompt and not _HAS["no"].search(prompt):
        extra.append(f"--no {' '.join(params.negative_prompt.split())}")
    if not _HAS["seed"].search(prompt):  # the seed the gateway resolved (and reports) is the one used
        extra.append(f"--seed {generation.seed}")
    version = VERSIONS.get(generation.model)
    if version and not any(_HAS[p].search(prompt) for p in ("v", "version", "niji")):
        extra.append(f"--v {version}")
    if generation.model in TURBO_MODELS and flavor.name == NOVICEZK and not _HAS["turbo"].search(prompt):
        extra.append("--turbo")
    return " ".join([prompt, *extra])


def blend_dimensions(width: int, height: int) -> str:
    if width < height:
        return "PORTRAIT"
    return "LANDSCAPE" if width > height else "SQUARE"


@dataclass(frozen=True)
class Change:
    """A U/V/reroll press: UPSCALE/VARIATION with index 1-4, or REROLL."""

    action: str
    index: int = 0

    @property
    def label(self) -> str:
        return "🔄" if self.action == "REROLL" else f"{self.action[0]}{self.index}"


def parse_change(action: str) -> Change | None:
    """U1..U4, V1..V4, R/reroll, or a grid button's customId; None for any other button."""
    if m := _CHANGE.match(action):
        return (
            Change({"U": "UPSCALE", "V": "VARIATION"}[m.group(1).upper()], int(m.group(2)))
            if m.group(1)
            else Change("REROLL")
        )
    if m := _CUSTOM.match(action.strip()):
        kind = {"upsample": "UPSCALE", "variation": "VARIATION", "reroll": "REROLL"}[m.group(1)]
        return Change(kind, 0 if kind == "REROLL" else int(m.group(2)))
    return None


def change_body(task_id: str, change: Change) -> dict:
    body: dict = {"taskId": task_id, "action": change.action}
    if change.action != "REROLL":
        body["index"] = change.index
    return body


def custom_id_for(action: str, parent_buttons: list[gen.Button]) -> str:
    """The customId to press on trueai: the button itself, or the one a U/V/reroll names."""
    action = action.strip()
    if action.startswith("MJ::"):
        return action
    change = parse_change(action)
    if change is not None:
        for button in parent_buttons:
            pressed = parse_change(button.custom_id)
            if pressed == change:
                return button.custom_id
    raise ProviderError(ErrorCode.INVALID_REQUEST, f"the parent generation has no {action!r} button")


def grid_buttons(task: dict) -> list[gen.Button]:
    """novicezk's grids have no buttons field: U1-U4, reroll, V1-V4 in Midjourney's shape."""
    ref = (task.get("properties") or {}).get("messageHash") or task.get("id", "")
    buttons = [gen.Button(custom_id=f"MJ::JOB::upsample::{i}::{ref}", label=f"U{i}") for i in range(1, 5)]
    buttons.append(gen.Button(custom_id=f"MJ::JOB::reroll::0::{ref}::SOLO", emoji="🔄"))
    buttons += [gen.Button(custom_id=f"MJ::JOB::variation::{i}::{ref}", label=f"V{i}") for i in range(1, 5)]
    return buttons


def buttons_of(task: dict, flavor: Flavor) -> list[gen.Button]:
    if flavor.has_buttons:
        return [
            gen.Button(
                custom_id=str(b.get("customId", "")), label=str(b.get("label") or ""), emoji=str(b.get("emoji") or "")
            )
            for b in task.get("buttons") or []
            if b.get("customId")
        ]
    return grid_buttons(task) if task.get("action") in GRID_ACTIONS else []


def descriptions_of(task: dict) -> list[str]:
    """describe's four prompts: `properties.finalPrompt` is "1️⃣ ...\\n\\n2️⃣ ..."."""
    text = (task.get("properties") or {}).get("finalPrompt") or task.get("prompt") or ""
    parts = _DESCRIBE_MARK.split(text) if _DESCRIBE_MARK.search(text) else re.split(r"\n\s*\n", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


class QueueFull(ProviderError):
    """Submit code 23: the proxy's queue is full; like a 429, worth retrying a little later."""


def submitted_task_id(body: object) -> str:
    """The task id of a submit response, or the ProviderError its code means."""
    if not isinstance(body, dict):
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "the Midjourney proxy answered a submit without a result", retryable=True
        )
    code = body.get("code")
    description = " ".join(str(body.get("description") or "").split())[:200]
    result = str(body.get("result") or "")
    properties = body.get("properties") or {}
    if code in (SUCCESS, IN_QUEUE) and result:
        return result
    if code == EXISTED and result:
        if "confirm" in description.lower() or "modal" in description.lower():
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"Midjourney asks for a confirmation the gateway cannot give: {description}"
            )
        return result  # the same action on the same image ran before: its task is the answer
    if code == BANNED_PROMPT:
        word = properties.get("bannedWord")
        raise ProviderError(
            ErrorCode.CONTENT_POLICY_VIOLATION,
            "Midjourney refused the prompt" + (f" (banned word: {word})" if word else ""),
        )
    if code == QUEUE_REJECTED:
        raise QueueFull(
            ErrorCode.PROVIDER_UNAVAILABLE, f"the Midjourney proxy's queue is full: {description}", retryable=True
        )
    if code == VALIDATION_ERROR:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"the Midjourney proxy rejected the request: {description}")
    if code == NOT_FOUND:
        raise ProviderError(
            ErrorCode.NOT_FOUND, f"the parent task no longer exists on the Midjourney proxy: {description}"
        )
    if code == FAILURE:
        raise ProviderError(
            ErrorCode.PROVIDER_UNAVAILABLE, f"the Midjourney proxy failed: {description}", retryable=True
        )
    raise ProviderError(
        ErrorCode.PROVIDER_ERROR, f"the Midjourney proxy answered code {code}: {description}", retryable=True
    )


def uploaded_url(body: object) -> str:
    """The Discord URL of an upload-discord-images answer (`result`: the URLs), or its error."""
    if isinstance(body, dict) and body.get("code") == SUCCESS:
        urls = body.get("result")
        if isinstance(urls, list) and urls and isinstance(urls[0], str) and urls[0].startswith(("http://", "https://")):
            return urls[0]
    if isinstance(body, dict) and body.get("code") == VALIDATION_ERROR:
        description = " ".join(str(body.get("description") or "").split())[:200]
        raise ProviderError(
            ErrorCode.INVALID_REQUEST,
            f"the Midjourney proxy refused to upload the omni reference (is EnableUserCustomUploadBase64 on?): "
            f"{description}; give image_url as a public http(s) URL instead",
        )
    raise ProviderError(
        ErrorCode.PROVIDER_ERROR, "the Midjourney proxy answered an upload without an image URL", retryable=True
    )


def failure_of(task: dict) -> ProviderError:
    """FAILURE (or trueai's CANCEL, MODAL) as the gateway's error."""
    status = task.get("status")
    reason = " ".join(str(task.get("failReason") or "").split())[:300]
    if status == "MODAL":
        return ProviderError(
            ErrorCode.PROVIDER_ERROR, "Midjourney asks for a confirmation (remix or region) the gateway cannot give"
        )
    if status == "CANCEL":
        return ProviderError(ErrorCode.PROVIDER_ERROR, "the task was cancelled on the Midjourney proxy", retryable=True)
    if _REFUSAL.search(reason):
        return ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"Midjourney refused the request: {reason}")
    return ProviderError(
        ErrorCode.PROVIDER_ERROR, f"Midjourney failed the task: {reason or 'no reason given'}", retryable=True
    )
