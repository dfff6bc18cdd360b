// Package bundle is a build context as an OCI artifact (issue 17): Pack writes a directory as a
// reproducible gzip tar, Image makes that tar the one layer of an OCI artifact, FromImage checks
// an artifact's shape and returns its layer, and Unpack extracts the layer into an empty
// directory, refusing hostile input.
//
// The artifact follows Flux's OCI artifact convention, so `flux push artifact` can push a build
// context too. The names come from github.com/fluxcd/pkg, module oci (read at commit e2cfd1a2,
// July 2026): oci/globals.go defines CanonicalConfigMediaType
// "application/vnd.cncf.flux.config.v1+json" and CanonicalContentMediaType
// "application/vnd.cncf.flux.content.v1.tar+gzip"; oci/constants.go the annotations
// org.opencontainers.image.{created,source,revision}; oci/push.go builds an OCI image manifest
// (application/vnd.oci.image.manifest.v1+json) with that config media type and one layer of the
// content media type. The Flux docs say the same (fluxcd/website,
// content/en/flux/cheatsheets/oci-artifacts.md, and RFC-0003). One difference: Flux writes a
// config blob holding an image config with `created`; Image writes the config blob `{}`, which
// nothing in Flux reads.
package bundle

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The media types of a build context artifact.
const (
	// ConfigMediaType is the media type of the artifact's config blob (Flux's
	// CanonicalConfigMediaType).
	ConfigMediaType types.MediaType = "application/vnd.cncf.flux.config.v1+json"
	// ContentMediaType is the media type of the artifact's one layer, a gzip tar (Flux's
	// CanonicalContentMediaType).
	ContentMediaType types.MediaType = "application/vnd.cncf.flux.content.v1.tar+gzip"
)

// The OCI annotations that Image sets on the manifest (Flux's CreatedAnnotation,
// SourceAnnotation and RevisionAnnotation).
const (
	// AnnotationCreated is when the artifact was made, RFC 3339; Image sets Epoch unless told.
	AnnotationCreated = "org.opencontainers.image.created"
	// AnnotationSource is the URL of the source the context came from, e.g. a Git repository.
	AnnotationSource = "org.opencontainers.image.source"
	// AnnotationRevision is the source's revision, e.g. "main@sha1:<commit>".
	AnnotationRevision = "org.opencontainers.image.revision"
)

// Epoch is the AnnotationCreated value of a reproducible artifact: the Unix epoch, RFC 3339.
const Epoch = "1970-01-01T00:00:00Z"

// Stats counts what Pack wrote or Unpack extracted.
type Stats struct {
	// Entries is the number of tar entries: directories, files, symlinks and hard links.
	Entries int
	// Bytes is the total size of the regular files' contents, uncompressed, in bytes.
	Bytes int64
}

// Limits bounds what Unpack extracts. A field that is zero or negative takes DefaultLimits'
// value.
type Limits struct {
	// MaxBytes is the most file content Unpack writes, in bytes, summed over all files.
	MaxBytes int64
	// MaxEntries is the most tar entries Unpack reads.
	MaxEntries int
}

// DefaultLimits are the limits a zero Limits field takes: 2 GiB of files and 200,000 entries.
var DefaultLimits = Limits{MaxBytes: 2 << 30, MaxEntries: 200_000}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultLimits.MaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	return l
}

// EntryError is why Pack or Unpack refused one entry: Entry is the entry's name as the archive
// (or, for Pack, the path relative to the directory) spells it, Reason says what is wrong with it.
type EntryError struct {
	Entry  string
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("build context entry %q: %s", e.Entry, e.Reason)
}
