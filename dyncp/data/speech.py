"""Offline speech synthesis with eSpeak NG through ctypes (the built-in corpus's talkers).

The PyPI wheel ``espeakng-loader`` carries ``libespeak-ng`` and its voice data, so nothing is
downloaded. eSpeak NG is GPL-3: it is an optional extra (``pip install dyncp[corpus]``) and is
only loaded when the built-in corpus is built.

Facts this module relies on (eSpeak NG 1.52 ``speak_lib.h``):

- ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, buflength_ms, path, options)`` returns the output
  sample rate (22050 Hz). ``path`` must be the data folder: with NULL the library looks in
  compiled-in locations and *exits the process* when it finds nothing, so we always pass it, and
  also set ``espeakINITIALIZE_DONT_EXIT``.
- In synchronous mode ``espeak_Synth`` returns when the utterance is done; audio arrives in
  int16 chunks through the callback set with ``espeak_SetSynthCallback``.
- The library holds global state (one voice, one set of parameters), so one :class:`Synth` per
  process, used from one thread, is all that is allowed; :func:`synth` returns the singleton.
- Repeated synthesis in one process is not bit-reproducible (internal state carries over), which
  is why the corpus is generated once in a fixed order and cached on disk.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from ..errors import DataError

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
ENDPAUSE = 0x1000
POS_CHARACTER = 1
EE_OK = 0
RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); 0 = continue.
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)

_lock = threading.Lock()
_instance: "Synth | None" = None


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise DataError("the built-in corpus needs eSpeak NG: pip install dyncp[corpus] "
                        "(installs the espeakng-loader wheel)") from None
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except Exception as e:  # the wheel is broken (e.g. its data folder was removed)
        raise DataError(f"espeakng-loader is installed but unusable: {e}") from None


class Synth:
    """One eSpeak NG engine. ``say(text, voice, rate, pitch, range_)`` -> int16 [N] at ``sr``."""

    def __init__(self) -> None:
        lib_path, data_path = _paths()
        if not Path(lib_path).is_file():
            raise DataError(f"eSpeak NG library not found at {lib_path} "
                            "(reinstall: pip install --force-reinstall espeakng-loader)")
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise DataError(f"cannot load eSpeak NG from {lib_path}: {e}") from None
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 200, data_path.encode(),
                                   INITIALIZE_DONT_EXIT)
        if sr <= 0:
            raise DataError(f"eSpeak NG failed to initialise with data path {data_path} "
                            f"(returned {sr})")
        self.lib, self.sr, self.data_path = lib, int(sr), data_path
        self._chunks: list[np.ndarray] = []

        def _collect(wav, n, _events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(_collect)  # keep a reference: the library calls it later
        lib.espeak_SetSynthCallback(self._cb)

    def voices(self) -> list[str]:
        """Variant names (e.g. ``f3``, ``m2``, ``klatt``) shipped in the data folder."""
        vdir = Path(self.data_path) / "voices" / "!v"
        return sorted(p.name for p in vdir.iterdir() if p.is_file())

    def say(self, text: str, voice: str, rate: int = 175, pitch: int = 50,
            range_: int = 50) -> np.ndarray:
        """Synthesise ``text`` with ``voice`` (``lang`` or ``lang+variant``, e.g. ``en+f3``).

        ``rate`` in words per minute (80-450), ``pitch`` and ``range_`` in 0-100 (eSpeak units).
        Returns int16 [N] at ``self.sr`` Hz. Raises DataError naming the voice on failure.
        """
        with _lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                raise DataError(f"eSpeak NG: unknown voice {voice!r}")
            for param, value in ((RATE, rate), (PITCH, pitch), (RANGE, range_)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._chunks = []
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            err = self.lib.espeak_Synth(buf, len(buf), 0, POS_CHARACTER, 0,
                                        CHARS_UTF8 | ENDPAUSE, None, None)
            chunks, self._chunks = self._chunks, []
        if err != EE_OK:
            raise DataError(f"eSpeak NG: synthesis failed for voice {voice!r} (error {err})")
        if not chunks:
            raise DataError(f"eSpeak NG: no audio for voice {voice!r}, text {text[:40]!r}")
        return np.concatenate(chunks)


def synth() -> Synth:
    """The process-wide eSpeak NG engine (created on first use)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Synth()
        return _instance
