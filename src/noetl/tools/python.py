"""`kind: python`: run a step's Python source in-process, in a worker thread.

What the code sees as globals: every input key by name, `input_data` (a copy of the input, unless the input
has a key literally named `input_data`, whose value then wins), `args` (the input map), `context` and
`variables` (a shallow copy of the render context), `execution_id`, `step`, and the modules named in `libs`
(module or pip names; see `noetl.tools.pylibs`). Source comes from `code`, `code_b64` or a `script` file or URL
(`noetl.tools.scripts`).

The step's value is, in this order: the value of a top-level `return` (the code is then run as the body of a
function whose names are declared `global`, so it behaves like module code); the global `result`; the return
value of a callable `main`, called with keyword arguments bound by parameter name from the input (an
`async def main` runs with `asyncio.run` in the worker thread). The value is made JSON-safe with
`to_jsonable`.

Failures carry a kind (`noetl.tools.failure`): `timeout`, or the kind of the exception the code raised (an
HTTP error keeps its status's kind, a refused connection is `connection`, anything else `tool`).

Runaway code is stopped at the timeout by raising an exception inside its thread
(`PyThreadState_SetAsyncExc`): pure-Python loops stop at once, a blocking C call (`time.sleep`, a socket
read) stops when it returns. Threads come from a module-owned pool of daemon threads that grows whenever all
of its threads are busy, so a stuck step never starves later ones and never blocks interpreter exit.

`print` output is captured per call through thread-aware proxies installed on `sys.stdout`/`sys.stderr`;
output written by other threads the code starts, by subprocesses, or straight to file descriptor 1/2 is not
captured.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import ctypes
import inspect
import itertools
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, ToolStatus, timeout_seconds
from noetl.tools.jsonsafe import to_jsonable
from noetl.tools.pycompile import STEP_FUNC, Compiled, compile_source
from noetl.tools.pylibs import LibError, Libs, load_libs, missing_module_message
from noetl.tools.pyoutput import BoundedText, capture, install_proxies
from noetl.tools.scripts import ScriptError, read_script

__all__ = ["PythonTool"]

_IDLE_THREAD_SECONDS = 60.0  # an idle pool thread exits after this long
# `__name__` of step code: not "__main__", so `if __name__ == "__main__":` blocks do not run (main is called anyway)
_MODULE_NAME = "__noetl_python__"


class _StepTimeout(BaseException):
    """Raised inside a worker thread whose code ran past its timeout.

    A BaseException so that `except Exception:` in user code does not swallow it.
    """


# --------------------------------------------------------------------------------------------------------
# Running one call (in a worker thread)


@dataclass
class _Spec:
    source: str
    inputs: dict[str, Any]
    input_value: Any  # what `input_data`/`args` are when the input is not a map
    context: dict[str, Any]
    libs: Any
    execution_id: int
    step: str


@dataclass(frozen=True)
class _Outcome:
    status: ToolStatus
    data: Any = None
    error: str | None = None
    kind: str | None = None  # failure kind (noetl.tools.failure) when status is not success


def _execute(spec: _Spec) -> _Outcome:
    compiled: Compiled | None = None
    libs = Libs()
    try:
        compiled = compile_source(spec.source)
        libs = load_libs(spec.libs)
        glb = _globals(spec, libs)
        exec(compiled.code, glb)
        result: Any = None
        if compiled.wrapped:
            result = glb.pop(STEP_FUNC)()
        if result is None:
            result = glb.get("result")
            if "result" in spec.inputs and result is spec.inputs["result"]:
                result = None  # an input named `result` the code never set
        if result is None:
            main = glb.get("main")
            if callable(main):
                result = _call_main(main, spec)
        return _Outcome("success", to_jsonable(result))
    except _StepTimeout:
        return _TIMED_OUT
    except LibError as exc:
        return _Outcome("error", error=str(exc), kind=failure.TOOL)
    except ModuleNotFoundError as exc:
        hint = missing_module_message(exc, libs.missing)
        text = _describe(exc, compiled)
        return _Outcome("error", error=f"{hint}\n{text}" if hint else text, kind=failure.TOOL)
    except BaseException as exc:
        return _Outcome("error", error=_describe(exc, compiled), kind=failure.classify_exception(exc))


def _globals(spec: _Spec, libs: Libs) -> dict[str, Any]:
    glb: dict[str, Any] = {
        "__builtins__": builtins,
        "__name__": _MODULE_NAME,
        "context": spec.context,
        "variables": spec.context,
        "args": spec.input_value,
        "execution_id": spec.execution_id,
        "step": spec.step,
    }
    glb.update(spec.inputs)
    if "input_data" not in spec.inputs:
        glb["input_data"] = dict(spec.inputs) if isinstance(spec.input_value, Mapping) else spec.input_value
    glb.update(libs.bindings)
    return glb


def _call_main(main: Callable[..., Any], spec: _Spec) -> Any:
    positional: list[Any] = []
    kwargs: dict[str, Any] = {}
    try:
        params = list(inspect.signature(main).parameters.values())
    except (TypeError, ValueError):
        params = []
    specials: dict[str, Any] = {
        "input_data": spec.input_value,
        "args": spec.input_value,
        "context": spec.context,
    }
    positional_only: set[str] = set()
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.VAR_KEYWORD:
            for key, value in spec.inputs.items():
                if key not in positional_only:
                    kwargs.setdefault(key, value)
            continue
        if param.name in spec.inputs:
            value = spec.inputs[param.name]
        elif param.name in specials:
            value = specials[param.name]
        else:
            continue  # a default applies, or the call fails naming the missing argument
        if param.kind is param.POSITIONAL_ONLY:
            positional_only.add(param.name)
            if len(positional) == params.index(param):
                positional.append(value)
        else:
            kwargs[param.name] = value
    result = main(*positional, **kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _describe(exc: BaseException, compiled: Compiled | None) -> str:
    message = str(exc)
    if isinstance(exc, SyntaxError):
        text = f"SyntaxError: {exc.msg}"
        if exc.lineno:
            text += f" (line {exc.lineno})"
        if exc.text and exc.text.strip():
            text += f"\n    {exc.text.strip()}"
        return text
    head = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if compiled is None:
        return head
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == compiled.filename]
    where: list[str] = []
    for frame in frames[-3:]:
        lineno = frame.lineno or 0
        name = "<module>" if frame.name == STEP_FUNC else frame.name
        text = compiled.lines[lineno - 1].strip() if 0 < lineno <= len(compiled.lines) else ""
        where.append(f"  at line {lineno}, in {name}: {text}" if text else f"  at line {lineno}, in {name}")
    return "\n".join([head, *where])


# --------------------------------------------------------------------------------------------------------
# Threads


def _async_raise(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Schedule `exc_type` in the thread (None clears a pending one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type is not None else None
    )


class _Job:
    """One call: runs in a pool thread, can be interrupted from the event loop thread.

    Once an exception has been injected, the thread that ran the job is retired instead of going back to
    the pool, so a late-arriving injected exception can never land in another job.
    """

    def __init__(self, spec: _Spec, on_done: Callable[[_Outcome], None]) -> None:
        self.spec = spec
        self.stdout = BoundedText()
        self.stderr = BoundedText()
        self._on_done = on_done
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self._started = False
        self._cancelled = False
        self.injected = False  # read by the pool: retire the thread after this job

    def __call__(self) -> None:
        outcome: _Outcome | None = None
        try:
            with self._lock:
                if not self._cancelled:
                    self._started = True
                    self._thread_id = threading.get_ident()
            if self._started:
                capture.stdout = self.stdout
                capture.stderr = self.stderr
                outcome = _execute(self.spec)
        except _StepTimeout:
            outcome = _TIMED_OUT
        except BaseException as exc:  # an error outside user code; report it rather than lose the call
            outcome = _Outcome("error", error=f"{type(exc).__name__}: {exc}")
        while True:  # after a complete _disarm nothing more can be injected for this job
            try:
                self._disarm()
                break
            except _StepTimeout:
                continue
        try:
            self._on_done(outcome or _TIMED_OUT)
        except Exception:
            pass

    def _disarm(self) -> None:
        capture.stdout = None
        capture.stderr = None
        with self._lock:
            self._thread_id = None
            if self.injected:
                _async_raise(threading.get_ident(), None)  # drop one still pending

    def interrupt(self) -> None:
        """Stop the call: drop it if it has not started, else raise _StepTimeout inside its thread
        (again every few tenths of a second for a while, in case the code swallowed it)."""
        with self._lock:
            if not self._started:
                self._cancelled = True
                return
        self._inject(_REINJECT_TIMES)

    def _inject(self, remaining: int) -> None:
        with self._lock:
            if self._thread_id is None:
                return
            self.injected = True
            _async_raise(self._thread_id, _StepTimeout)
        if remaining > 0:
            timer = threading.Timer(_REINJECT_SECONDS, self._inject, (remaining - 1,))
            timer.daemon = True
            timer.start()


_TIMED_OUT = _Outcome("timeout", error="python code timed out", kind=failure.TIMEOUT)
_REINJECT_TIMES = 20
_REINJECT_SECONDS = 0.25


class _ElasticPool:
    """Daemon worker threads; a new one starts whenever every existing one is busy, idle ones exit.

    Daemon threads never hold up interpreter exit, and a job stuck in a blocking call only ever costs
    its own thread.
    """

    def __init__(self, idle_seconds: float = _IDLE_THREAD_SECONDS) -> None:
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._idle = 0  # threads waiting for work and not yet promised to a submitted job
        self._names = itertools.count(1)

    def submit(self, job: _Job) -> None:
        with self._lock:
            self._queue.put(job)
            if self._idle > 0:
                self._idle -= 1  # an idle thread will take it
                return
        name = f"noetl-python-{next(self._names)}"
        threading.Thread(target=self._thread_main, name=name, daemon=True).start()

    def _thread_main(self) -> None:
        try:
            self._work()
        except BaseException:  # a late injected exception in a retiring thread
            pass

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:
                        self._idle -= 1
                        return
                continue  # a submit counted on this thread: its job is in the queue
            try:
                job()
            except BaseException:
                pass
            if job.injected:
                return  # retire: not counted idle, so the pool's books stay balanced
            with self._lock:
                self._idle += 1


_pool = _ElasticPool()

# Classes defined by step code name this module; dataclasses and typing look it up in sys.modules.
sys.modules.setdefault(_MODULE_NAME, ModuleType(_MODULE_NAME, "Namespace of code run by the python tool"))


# --------------------------------------------------------------------------------------------------------
# The tool


class PythonTool:
    kind = "python"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.perf_counter()

        def finish(outcome: _Outcome, job: _Job | None = None) -> ToolResult:
            kind = outcome.kind if outcome.status != "success" else None
            return ToolResult(
                status=outcome.status,
                data=outcome.data,
                error=outcome.error,
                error_kind=kind,
                retryable=failure.is_retryable(kind),
                stdout=job.stdout.getvalue() if job else None,
                stderr=job.stderr.getvalue() if job else None,
                duration_ms=(time.perf_counter() - started) * 1000.0,
            )

        try:
            source = await _source(config, ctx)
        except ScriptError as exc:
            return finish(_Outcome("error", error=str(exc), kind=failure.TOOL))
        raw_input = config.get("input", config.get("args"))
        if raw_input is None:
            raw_input = {}
        inputs = dict(raw_input) if isinstance(raw_input, Mapping) else {}
        spec = _Spec(
            source=source,
            inputs=inputs,
            input_value=inputs if isinstance(raw_input, Mapping) else raw_input,
            context=dict(ctx.render_context),
            libs=config.get("libs"),
            execution_id=ctx.execution_id,
            step=ctx.step,
        )
        timeout = timeout_seconds(config, ctx)

        install_proxies()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Outcome] = loop.create_future()

        def on_done(outcome: _Outcome) -> None:
            try:
                loop.call_soon_threadsafe(_resolve, waiter, outcome)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        job = _Job(spec, on_done)
        _pool.submit(job)
        try:
            if timeout is None:
                outcome = await waiter
            else:
                outcome = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            job.interrupt()
            text = f"python code timed out after {timeout:g} s"
            return finish(_Outcome("timeout", error=text, kind=failure.TIMEOUT), job)
        except asyncio.CancelledError:
            job.interrupt()
            raise
        if outcome.status == "timeout":  # only when the call was interrupted in a race with its deadline
            outcome = replace(outcome, error=f"python code timed out after {timeout or 0:g} s")
        return finish(outcome, job)


def _resolve(waiter: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


async def _source(config: Mapping[str, Any], ctx: ToolContext) -> str:
    code = config.get("code")
    if code is not None and code != "":
        return code if isinstance(code, str) else str(code)
    for key in ("code_b64", "code_base64"):
        encoded = config.get(key)
        if encoded:
            try:
                return base64.b64decode(str(encoded)).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as exc:
                raise ScriptError(f"python: '{key}' is not valid base64 UTF-8 text: {exc}") from None
    script = config.get("script")
    if script:
        return await read_script(script, ctx, tool="python")
    raise ScriptError("python: the tool needs 'code' (or 'code_b64', or a 'script' file or URL)")
