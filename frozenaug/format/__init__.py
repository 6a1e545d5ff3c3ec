"""The shard format, defined once: the builder writes it, the trainer reads it (docs/FORMAT.md).

``from frozenaug import format as fmt`` gives every name of the format: ``schema`` (names, dtypes,
encodings, paths), ``manifest`` (the typed manifest) and ``check`` (the one check of a shard).
``frozenaug.format.codec`` (image encodings; imports OpenCV) is imported on its own.
"""

from frozenaug.format.check import (  # noqa: F401
    checked_shard,
    finish_matches,
    image_problems,
    manifest_problems,
    open_shard,
    problems,
    sha256_file,
)
from frozenaug.format.manifest import (  # noqa: F401
    FINISH_DIR,
    Manifest,
    ShardEntry,
    load_manifest,
    make_manifest,
    read_split_identity,
)
from frozenaug.format.paths import (  # noqa: F401
    path_problem,
)
from frozenaug.format.schema import (  # noqa: F401
    ATTR_CLASS_NAMES,
    ATTR_ENCODING,
    ATTR_EPOCH,
    ATTR_POLICY_HASH,
    ATTR_SCHEMA_VERSION,
    ATTR_SHARD_INDEX,
    ATTR_SPLIT,
    CHUNK_IMAGES,
    CODECS,
    DATASET_DTYPES,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_SHARD_SIZE,
    DS_IMAGE_BYTES,
    DS_IMAGE_OFFSETS,
    DS_IMAGES,
    DS_LABELS,
    DS_SOFT_LABELS,
    DS_SOURCE_INDEX,
    ENCODING_RULE,
    FORMAT_NAME,
    IMAGE_BYTES_DTYPE,
    IMAGE_DTYPE,
    IMAGE_OFFSETS_DTYPE,
    LABEL_DTYPE,
    MANIFEST_NAME,
    RAW,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    SOFT_LABEL_DTYPE,
    SOURCE_INDEX_DTYPE,
    SPLIT_NAME,
    SPLITS,
    Encoding,
    parse_encoding,
    shard_relpath,
    split_encoding,
)
