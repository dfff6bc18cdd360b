package contract

// Every limit kiln puts on the length of what a build reports, in one place. Lengths are in
// bytes and texts are cut at a rune boundary (Truncate, TruncateStart). The result's limits let
// the largest result a build can make fit in MaxResultBytes (TestWorstCaseFitsTerminationMessage).
const (
	// MaxResultBytes is the kubelet's limit on a termination message, which carries the Result.
	MaxResultBytes = 4096

	// MaxMessage bounds a failure message: Result.Message and status.lastBuild.message.
	MaxMessage = 1024
	// LogTailLines is how many of its last log lines a failed runner keeps for Result.LogTail.
	LogTailLines = 20
	// MaxLogTail bounds Result.LogTail.
	MaxLogTail = 1200
	// MaxAdviceMessage bounds a finding's message in the result.
	MaxAdviceMessage = 200
	// MaxCreatedBy bounds a layer's instruction in the result.
	MaxCreatedBy = 80
	// MaxLayersPerPlatform is how many of its largest layers a platform image reports.
	MaxLayersPerPlatform = 5
	// MaxPackagesPerPlatform is how many of its largest packages a platform image reports.
	MaxPackagesPerPlatform = 5
	// MaxPlatforms is the most platforms a build makes (spec.dockerfile.platforms' maxItems).
	MaxPlatforms = 8

	// MaxStatusLogTail bounds status.lastBuild.logTail, which holds Result.LogTail or, when the
	// runner crashed, the end of its log that the kubelet kept.
	MaxStatusLogTail = 2048
	// MaxLogLine bounds the crashed runner's last log line quoted in its failure message.
	MaxLogLine = 300
	// MaxEventMessage bounds the part of an Event's message that quotes a failure message.
	MaxEventMessage = 512
	// MaxEventNote is the API server's limit on an Event's note (events.k8s.io/v1): a longer
	// Event is refused, and lost. Every note the manager writes is cut to it.
	MaxEventNote = 1024
	// MaxConditionMessage is the API server's limit on a condition's message.
	MaxConditionMessage = 32768
)

// What the runner unpacks from an OCI source (spec.source.oci).
const (
	// DefaultMaxSourceBytes bounds the unpacked context's bytes when the manager's
	// --max-source-size says nothing.
	DefaultMaxSourceBytes = 1 << 30
	// MaxSourceEntries bounds its files, directories and links.
	MaxSourceEntries = 200_000
)

// What Fit shortens to when the limits above are not enough.
const (
	fitLogTail = 400
	fitMessage = 256
)
