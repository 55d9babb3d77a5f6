"""Privacy at the door: consent, pseudonymisation and erasure requests.

Applied right after validation, before anything is aggregated or written:

* An event without personalisation consent is filtered (`no_consent`). When an
  event carries no consent object, `consent_default` decides; the default is
  "deny" (strict).
* A user on the suppression list (`read_suppression_list`: raw user ids, the
  erasure requests) is filtered (`suppressed`).
* `user_id` is replaced by HMAC-SHA256(key, user_id) in hex.

The key is a secret: the graph holds only an `IdKeyRef` (where the key is: a file, a
``gs://`` object, a Secret Manager secret version, an environment variable, or the
published demo key), and each worker reads the key in `DoFn.setup()`. So the pickled
pipeline (which Dataflow stages to Cloud Storage) never contains it, and it is never
logged or written.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import json
import os
import re
import tempfile
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.contracts.events import Event
from transforms.contracts.outcomes import FilterReason, filtered_counter

ID_KEY_ENV = "SEGMENTS_ID_KEY"
# Published on purpose: the demo and the tests use it so that their pseudonyms are
# reproducible. Jobs off this machine refuse it (`check_id_key`).
DEMO_ID_KEY = b"segments-demo-key--not-a-secret"
# HMAC-SHA256's block is 64 bytes and its output 32: a shorter key is weaker than the hash.
MIN_KEY_BYTES = 32
SECRET_VERSION = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")


class ConsentDefault(str, enum.Enum):
    """What an event without a consent object is taken to have said."""

    DENY = "deny"
    GRANT = "grant"


class MissingIdKey(RuntimeError):
    """No usable pseudonymisation key was configured for a run that needs one."""


class KeySource(str, enum.Enum):
    """Where an `IdKeyRef` points."""

    FILE = "file"  # a local path or gs:// object
    SECRET = "secret"  # a Secret Manager secret version, projects/P/secrets/S/versions/V
    ENV = "env"  # an environment variable of the process that reads it
    DEMO = "demo"  # the published demo key


class IdKeyRef(NamedTuple):
    """Where the HMAC key is, never the key itself: this is what the pipeline graph holds.

    Attributes:
      source: the kind of place.
      location: the path, secret version name or variable name ("" for the demo key).
    """

    source: KeySource
    location: str = ""

    def describe(self) -> str:
        """For messages: where the key is (never what it is)."""
        return {KeySource.FILE: f"key file {self.location}", KeySource.SECRET: f"secret {self.location}",
                KeySource.ENV: f"environment variable {self.location}", KeySource.DEMO: "the demo key"}[self.source]

    def read(self) -> bytes:
        """The key's bytes, surrounding whitespace removed.

        Raises:
          MissingIdKey: the place holds no key (empty file, unset variable) or cannot be read.
        """
        if self.source is KeySource.DEMO:
            return DEMO_ID_KEY
        if self.source is KeySource.ENV:
            key = os.environ.get(self.location, "").strip().encode("utf-8")
        elif self.source is KeySource.FILE:
            try:
                with FileSystems.open(self.location) as handle:
                    key = handle.read().strip()
            except Exception as error:  # FileSystems raises IOError, BeamIOError, ...
                raise MissingIdKey(f"cannot read the key file {self.location}: {error}") from None
        else:
            from apache_beam.transforms.util import GcpSecret

            try:
                key = GcpSecret(self.location).get_secret_bytes().strip()
            except Exception as error:
                raise MissingIdKey(f"cannot read the secret {self.location}: {error}") from None
        if not key:
            raise MissingIdKey(f"the {self.describe()} holds no key (it is empty)")
        return key


def id_key_reference(key_file: Optional[str] = None, key_secret: Optional[str] = None,
                     use_demo_key: bool = False) -> IdKeyRef:
    """Where the key is: the key file, else the secret, else `SEGMENTS_ID_KEY`, else the demo key.

    Reads nothing: see `IdKeyRef.read` and `check_id_key`.

    Raises:
      MissingIdKey: both a file and a secret are given, or nothing is configured and
        the demo key was not asked for.
    """
    if key_file and key_secret:
        raise MissingIdKey("give --id_key_file or --id_key_secret, not both")
    if key_file:
        return IdKeyRef(KeySource.FILE, key_file)
    if key_secret:
        if not SECRET_VERSION.match(key_secret):
            raise MissingIdKey(f"--id_key_secret must be projects/PROJECT/secrets/NAME/versions/VERSION, "
                               f"got {key_secret!r}")
        return IdKeyRef(KeySource.SECRET, key_secret)
    if os.environ.get(ID_KEY_ENV, "").strip():
        return IdKeyRef(KeySource.ENV, ID_KEY_ENV)
    if use_demo_key:
        return IdKeyRef(KeySource.DEMO)
    raise MissingIdKey(
        f"no pseudonymisation key: set {ID_KEY_ENV}, pass --id_key_file or --id_key_secret, or --demo_key for "
        "local trials")


def check_id_key(ref: IdKeyRef, key: bytes, *, off_this_machine: bool) -> None:
    """Refuses a key a job off this machine (Dataflow) must not use.

    Such a job refuses the demo key (published), keys shorter than `MIN_KEY_BYTES`, and
    a key in an environment variable (the workers do not see this machine's environment).

    Raises:
      MissingIdKey: the key is refused.
    """
    if not off_this_machine:
        return
    if ref.source is KeySource.ENV:
        raise MissingIdKey(f"{ID_KEY_ENV} is only seen on this machine: a job on remote workers needs "
                           "--id_key_file gs://... or --id_key_secret projects/P/secrets/S/versions/V")
    if key == DEMO_ID_KEY or ref.source is KeySource.DEMO:
        raise MissingIdKey(f"the {ref.describe()} holds the published demo key: a job off this machine needs a "
                           "key of its own")
    if len(key) < MIN_KEY_BYTES:
        raise MissingIdKey(f"the {ref.describe()} holds a {len(key)}-byte key: at least {MIN_KEY_BYTES} bytes are "
                           f"needed (for example: head -c 48 /dev/urandom | base64)")


def resolve_id_key(key_file: Optional[str], use_demo_key: bool) -> bytes:
    """The key's bytes, from a key file, the env var, or the demo key (see `id_key_reference`)."""
    return id_key_reference(key_file, None, use_demo_key).read()


@functools.lru_cache(maxsize=8)
def _key_of(ref: IdKeyRef) -> bytes:
    return ref.read()


def pseudonymise(key: Union[bytes, IdKeyRef], user_id: str) -> str:
    """The user key that replaces a raw user id: HMAC-SHA256, hex."""
    if isinstance(key, IdKeyRef):
        key = _key_of(key)
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- suppression list

SUPPRESSION_FORMAT = """\
The suppression list (and the --user_ids file of `segments erase`): UTF-8 text, one raw
user id per line (a byte-order mark at the start is ignored; lines end in LF or CRLF).
Spaces and tabs around an id are ignored; empty lines are ignored; a line whose first
non-blank character is '#' is a comment. An id that begins or ends with whitespace,
begins with '#' or '"', or contains a line break is written as a JSON string on its
line: "#vip", " u-42 ". `segments erase` appends ids in this form."""

_BLANK = " \t\r\n\f\v"


class SuppressionListError(ValueError):
    """A suppression list (or user-id file) that does not follow `SUPPRESSION_FORMAT`."""


def parse_user_ids(data: bytes, name: str = "suppression list") -> list[str]:
    """The user ids of a file in `SUPPRESSION_FORMAT`, in file order (repeats kept).

    Raises:
      SuppressionListError: not UTF-8, or a quoted id that is not one JSON string.
    """
    try:
        text = data.decode("utf-8-sig")  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise SuppressionListError(f"{name}, line {line}: not UTF-8") from None
    ids = []
    for number, line in enumerate(text.split("\n"), start=1):
        entry = line.strip(_BLANK)
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith('"'):
            try:
                value = json.loads(entry)
            except ValueError:
                value = None
            if not isinstance(value, str):
                raise SuppressionListError(f"{name}, line {number}: {entry[:60]!r} is not one JSON string")
            entry = value
        if not entry:
            raise SuppressionListError(f"{name}, line {number}: an empty id")
        ids.append(entry)
    return ids


def format_user_id(user_id: str) -> str:
    """One line of `SUPPRESSION_FORMAT` that `parse_user_ids` reads back as `user_id`."""
    if (not user_id or user_id != user_id.strip(_BLANK) or user_id[0] in '#"'
            or any(ch in user_id for ch in "\r\n\f\v\x85\u2028\u2029")):
        return json.dumps(user_id, ensure_ascii=False)
    return user_id


def read_user_ids(path: str, name: str = "suppression list") -> list[str]:
    """`parse_user_ids` of a local or gs:// file.

    Raises:
      FileNotFoundError: there is no such file.
      SuppressionListError: the file does not follow `SUPPRESSION_FORMAT`.
    """
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{name} {path} does not exist")
    with FileSystems.open(path) as handle:
        return parse_user_ids(handle.read(), f"{name} {path}")


_USER_FIELD = re.compile(rb'"user_(?:id|key)"\s*:\s*"((?:[^"\\]|\\.){1,1024})"')


class UserIdFinder:
    """Does a raw payload name one of some users? For payloads that are not valid events.

    A payload names a user when it holds ``"user_id": "<id>"`` (or ``user_key``) as JSON
    writes it, parseable or not (truncated, broken), or, in `binary` data (a damaged Avro
    block, bytes that are not UTF-8), the id as Avro writes a string (its length as a
    one- or two-byte varint, then its UTF-8 bytes). Each test costs one pass over the
    payload, whatever the number of users.
    """

    def __init__(self, user_ids: Iterable[str]):
        self._ids = frozenset(user_ids)
        self._encoded = frozenset(user_id.encode("utf-8") for user_id in self._ids)

    def __bool__(self) -> bool:
        return bool(self._ids)

    def names(self, data: Union[bytes, str], binary: bool = False) -> bool:
        if not self._ids:
            return False
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        for match in _USER_FIELD.finditer(data):
            try:
                if json.loads(b'"' + match.group(1) + b'"') in self._ids:
                    return True
            except ValueError:
                continue
        return binary and self._names_avro_string(data)

    def _names_avro_string(self, data: bytes) -> bool:
        encoded, end = self._encoded, len(data)
        for i, first in enumerate(data):
            if first & 1:  # zig-zag: a string length is even
                continue
            if first < 0x80:
                start, length = i + 1, first >> 1
            elif i + 1 < end and data[i + 1] < 0x80:
                start, length = i + 2, ((first & 0x7F) | (data[i + 1] << 7)) >> 1
            else:
                continue
            if 0 < length <= end - start and data[start:start + length] in encoded:
                return True
        return False


def read_suppression_list(path: Optional[str]) -> frozenset[str]:
    """The raw user ids of the suppression list at `path` (none without a path)."""
    return frozenset(read_user_ids(path)) if path else frozenset()


def append_to_suppression_list(path: str, user_ids: Sequence[str]) -> int:
    """Adds the ids the list at `path` lacks (creating it if needed); returns how many.

    The whole file is written again (a gs:// object cannot be appended to); a local file is
    replaced atomically, so a job reading it sees the old list or the new one.
    """
    existing = FileSystems.exists(path)
    old = b""
    if existing:
        with FileSystems.open(path) as handle:
            old = handle.read()
    present = set(parse_user_ids(old, f"suppression list {path}"))
    new = [user_id for user_id in dict.fromkeys(user_ids) if user_id not in present]
    if not new:
        return 0
    lines = "".join(format_user_id(user_id) + "\n" for user_id in new).encode("utf-8")
    data = old + (b"\n" if old and not old.endswith(b"\n") else b"") + lines
    if "://" in path:
        with FileSystems.create(path) as handle:
            handle.write(data)
    else:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False, prefix=".suppression-") as handle:
            handle.write(data)
        os.replace(handle.name, path)
    return len(new)


# ----------------------------------------------------------------------------- the step

PSEUDONYM_CACHE_SIZE = 65_536  # user ids per worker; ~10 MB


class _PrivacyFn(beam.DoFn):
    def __init__(self, key: Union[bytes, IdKeyRef], suppression_list: Optional[str], consent_default: ConsentDefault):
        # A reference is what the graph should hold; raw bytes are accepted for tests.
        self._key = key
        self._suppression_list = suppression_list
        self._grant_by_default = consent_default == ConsentDefault.GRANT

    def setup(self):
        # Read on the worker: the key is never pickled with the graph, nor a large list.
        key = self._key.read() if isinstance(self._key, IdKeyRef) else self._key
        self._suppressed = read_suppression_list(self._suppression_list)
        self._no_consent = filtered_counter(FilterReason.NO_CONSENT)
        self._suppressed_count = filtered_counter(FilterReason.SUPPRESSED)
        # A user sends many events: remember recent pseudonyms instead of re-hashing.
        self._pseudonym = functools.lru_cache(maxsize=PSEUDONYM_CACHE_SIZE)(functools.partial(pseudonymise, key))

    def process(self, event: Event) -> Iterable[Event]:
        consented = event.consent_personalization
        if consented is None:
            consented = self._grant_by_default
        if not consented:
            self._no_consent.inc()
            yield beam.pvalue.TaggedOutput(PrivacyTag.FILTERED.value, FilterReason.NO_CONSENT.value)
            return
        if event.user_id in self._suppressed:
            self._suppressed_count.inc()
            yield beam.pvalue.TaggedOutput(PrivacyTag.FILTERED.value, FilterReason.SUPPRESSED.value)
            return
        # Event._make over a slice: a third of `_replace`'s cost, once per event.
        yield Event._make((event.event_id, self._pseudonym(event.user_id)) + event[2:])


class PrivacyTag(str, enum.Enum):
    """Outputs of `_PrivacyFn`."""

    EVENTS = "events"  # consented, unsuppressed events, pseudonymised (the main output)
    FILTERED = "filtered"  # the `FilterReason` of each event kept out


class Privacy(NamedTuple):
    """Outputs of `ApplyPrivacy`."""

    events: beam.PCollection  # consented, unsuppressed events, pseudonymised
    filtered: beam.PCollection  # the reason (`FilterReason` value) of each event kept out


class ApplyPrivacy(beam.PTransform):
    """Filters events without consent or from suppressed users; pseudonymises the rest.

    Returns `Privacy`: the events, and one reason per event kept out (the counters
    ``filtered.<reason>`` count them too; the streaming audit tallies the reasons, as the
    local runner stops updating counters in streaming).

    Args:
      key: where the HMAC key is (`IdKeyRef`, read by each worker at setup); raw key
        bytes are accepted for tests but are then pickled into the graph.
      suppression_list: path of the erasure list (`SUPPRESSION_FORMAT`), or None.
      consent_default: what a missing consent object means.
    """

    def __init__(self, key: Union[bytes, IdKeyRef], suppression_list: Optional[str] = None,
                 consent_default: ConsentDefault = ConsentDefault.DENY):
        super().__init__()
        self._fn = _PrivacyFn(key, suppression_list, ConsentDefault(consent_default))

    def expand(self, events: beam.PCollection[Event]):  # -> Privacy (not annotated: Beam would take it for an element type)
        out = events | "ConsentSuppressPseudonymise" >> beam.ParDo(self._fn).with_outputs(
            PrivacyTag.FILTERED.value, main=PrivacyTag.EVENTS.value)
        return Privacy(out[PrivacyTag.EVENTS.value], out[PrivacyTag.FILTERED.value])
