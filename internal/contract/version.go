package contract

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Version is the contract version this kiln writes, "MAJOR.MINOR", in the "v" field of both the
// Request and the Result. The rules, from 1.1 on:
//
//   - A reader takes a document of its own major version and of any minor version, older or
//     newer. Fields it does not know are ignored; fields it knows and the document lacks keep
//     their zero values. So a new minor version only adds fields that a reader of an older minor
//     version may go without, and every reader copes with the absence of the fields added after
//     the oldest minor version of its major version.
//   - Anything else (a field removed, renamed, given another type or meaning, or one that an
//     older reader must not ignore) is a new major version. A reader refuses a document of
//     another major version with a *VersionError naming both versions: the runner fails the build
//     as InternalError, and so does the manager when it reads such a result.
//   - The "v" field is always a JSON string; a document without it is version 1.0.
//
// The versions:
//
//	1.0  kiln v0.1.0, which wrote no version: the request embeds the spec and its runner refuses
//	     unknown request fields; the result carries the budget's verdict and messages as text.
//	1.1  "v" in both documents; the runner ignores unknown request fields; the result's budget is
//	     numbers only (the manager writes the text), and an OverBudget result has no message.
//	1.2  the request's "spec" is the contract's own BuildSpec, no longer the CRD's spec: only what
//	     the runner reads, under the same JSON names and paths, with spec.budget's sizes as
//	     numbers of bytes instead of quantity strings ("50Mi"). The result adds the largest waste
//	     per platform (Platform.LargestWaste) and the layer a broken maxGrowth blames
//	     (Check.Layer), names the built image (Digest, Image) also when it was not pushed, and may
//	     carry the failure class SourceUnavailable (an older manager takes an unknown class as
//	     InternalError). Added later within 1.2, optional for both sides: the request's
//	     spec.source.git.insecure (a runner may log it, never require it).
//	1.3  the request's spec.output.provenance (a 1.2 runner builds without provenance),
//	     spec.output.signing (a 1.2 runner would push unsigned: the manager must not start
//	     signed builds on 1.2 runners) and the ImageBuild's generation; the result's
//	     attestations and signature (a 1.2 manager records none in status).
//	1.4  the request's spec.cache.registry (a 1.3 runner builds without the registry cache,
//	     which costs time, never correctness), the previous image (a 1.3 runner makes every
//	     SBOM anew) and spec.dockerfile.allowPlatformMismatch (a 1.3 runner pushes what a 1.4
//	     one refuses: executables of another architecture) and spec.source.oci (a 1.3 runner
//	     fails it as BadInput, "spec.source must set git or configMap"); the result's cache
//	     report (a 1.3 manager records none in status).
//
// A 1.1 manager reads 1.0 results, so builds that run across a manager upgrade report; a 1.0
// runner cannot read a 1.1 request, so the manager must not start new builds on 1.0 runners.
//
// 1.2 is a minor version although the request lost fields and its sizes changed form, because
// no reader of major version 1 notices: no 1.1 runner read the fields that went (timeout, cache,
// retries, scheduling, polling), and a 1.1 runner decodes "spec" as the CRD's spec, whose
// quantities take a JSON number of bytes as they take "50Mi", so it reads a 1.2 request whole
// and judges the same limits (TestOlderRunnerReadsRequest). A 1.2 runner reads 1.0 and 1.1
// requests, their quantity strings included (BudgetSpec.UnmarshalJSON; TestReadOlderMinorRequest).
// From 1.2 the request's names are the contract's own: renaming a CRD field renames nothing
// here, and renaming one here, or dropping the quantity strings, is a new major version.
const Version = "1.4"

// Major is the major version of Version: a reader takes documents of this major version only.
const Major = 1

// unversioned is the version of a document without "v".
const unversioned = "1.0"

// document names a contract document and its reader, for VersionError.
type document struct{ name, reader string }

var (
	documentRequest = document{name: "build request", reader: "runner"}
	documentResult  = document{name: "runner's result", reader: "manager"}
)

// VersionError is a document of a contract major version that this kiln cannot read.
type VersionError struct {
	// Document is what was read ("build request", "runner's result"), Reader who read it.
	Document, Reader string
	// Got is the document's version.
	Got string
}

func (e *VersionError) Error() string {
	got := e.Got
	if _, ok := majorOf(got); !ok {
		got = strconv.Quote(got)
	}
	return fmt.Sprintf("the %s is in contract version %s, which this %s (contract %s) cannot read: build pods need a runner image of the manager's contract major version (the manager's --runner-image)",
		e.Document, got, e.Reader, Version)
}

// checkVersion returns a *VersionError when data is a JSON object whose version is not of major
// version Major. It says nothing of data that is not a JSON object: the decoder that follows does.
func checkVersion(doc document, data []byte) error {
	var v struct {
		V *string `json:"v"`
	}
	if json.Unmarshal(data, &v) != nil {
		return nil
	}
	got := unversioned
	if v.V != nil {
		got = *v.V
	}
	if major, ok := majorOf(got); !ok || major != Major {
		return &VersionError{Document: doc.name, Reader: doc.reader, Got: got}
	}
	return nil
}

// majorOf parses the major version of "MAJOR.MINOR".
func majorOf(v string) (int, bool) {
	majorText, minorText, ok := strings.Cut(v, ".")
	if !ok {
		return 0, false
	}
	major, err := strconv.Atoi(majorText)
	if err != nil || major < 0 {
		return 0, false
	}
	if minor, err := strconv.Atoi(minorText); err != nil || minor < 0 {
		return 0, false
	}
	return major, true
}
