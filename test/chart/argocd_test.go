package chart

import (
	"os"
	"path/filepath"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// runHealth runs the chart's Argo CD health script on obj with gopher-lua, the interpreter Argo
// CD embeds, the way Argo CD does: obj as a global table, the script returning {status, message}.
func runHealth(t *testing.T, obj map[string]any) (status, message string) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join("..", "..", "charts", "kiln", "files", "argocd-health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: false})
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	fn, err := L.LoadString(string(script))
	if err != nil {
		t.Fatalf("health script does not compile: %v", err)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		t.Fatalf("health script failed: %v", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("health script returned %s, not a table", L.Get(-1).Type())
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message"))
}

func toLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case map[string]any:
		t := L.NewTable()
		for k, e := range x {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case []any:
		t := L.NewTable()
		for _, e := range x {
			t.Append(toLua(L, e))
		}
		return t
	case string:
		return lua.LString(x)
	case bool:
		return lua.LBool(x)
	case int:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case nil:
		return lua.LNil
	}
	panic("unsupported type")
}

func ib(gen int, observed int, suspend bool, conds ...map[string]any) map[string]any {
	var cs []any
	for _, c := range conds {
		cs = append(cs, c)
	}
	o := map[string]any{
		"metadata": map[string]any{"name": "hello", "generation": gen},
		"spec":     map[string]any{"suspend": suspend},
	}
	if conds != nil || observed != 0 {
		o["status"] = map[string]any{"observedGeneration": observed, "conditions": cs}
	}
	return o
}

func c(typ, status, msg string, gen int) map[string]any {
	return map[string]any{"type": typ, "status": status, "message": msg, "observedGeneration": gen, "reason": "R"}
}

func TestArgoCDHealth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		obj     map[string]any
		status  string
		message string
	}{
		{"new object", ib(1, 0, false), "Progressing", "Waiting for kiln to build the image"},
		{"building", ib(1, -1, false, c("Ready", "False", "build pod hello-build-1 is running", 1), c("Reconciling", "True", "build pod hello-build-1 is running", 1)),
			"Progressing", "build pod hello-build-1 is running"},
		{"queued", ib(1, -1, false, c("Ready", "False", "waiting for a build slot: position 2 of 3", 1)), "Progressing", "waiting for a build slot: position 2 of 3"},
		{"waiting for cache", ib(1, -1, false, c("Ready", "False", "cache claim team-cache is in use by build pod a-build-1", 1)),
			"Progressing", "cache claim team-cache is in use by build pod a-build-1"},
		{"ready", ib(2, 2, false, c("Ready", "True", "pushed registry.example.com/hello@sha256:ab (1.2MiB)", 2), c("SizeBudget", "True", "1.2MiB/5Mi", 2)),
			"Healthy", "pushed registry.example.com/hello@sha256:ab (1.2MiB)"},
		{"ready for an older generation", ib(3, 2, false, c("Ready", "True", "pushed old", 2)), "Progressing", "pushed old"},
		{"failed build", ib(1, 1, false, c("Ready", "False", "BuildFailed: Dockerfile:3: unknown instruction", 1), c("Stalled", "True", "BuildFailed: Dockerfile:3: unknown instruction", 1)),
			"Degraded", "BuildFailed: Dockerfile:3: unknown instruction"},
		{"over budget, enforced", ib(1, 1, false, c("Stalled", "True", "linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi", 1), c("SizeBudget", "False", "linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi", 1)),
			"Degraded", "linux/amd64: 61.2MiB is 11.2MiB over maxImageSize 50Mi"},
		{"over budget, warned and pushed", ib(1, 1, false, c("Ready", "True", "pushed x", 1), c("SizeBudget", "False", "61.2MiB over 50Mi", 1)),
			"Degraded", "Pushed over budget: 61.2MiB over 50Mi"},
		{"retrying", ib(1, -1, false, c("Ready", "False", "attempt 1 of 3 failed (PodLost: ...); retrying in 10s", 1), c("Reconciling", "True", "x", 1)),
			"Progressing", "attempt 1 of 3 failed (PodLost: ...); retrying in 10s"},
		{"suspended", ib(1, 1, true, c("Ready", "True", "pushed x", 1)), "Suspended", "spec.suspend is true: no build runs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, msg := runHealth(t, tc.obj)
			if status != tc.status || msg != tc.message {
				t.Errorf("got %s %q, want %s %q", status, msg, tc.status, tc.message)
			}
		})
	}
}
