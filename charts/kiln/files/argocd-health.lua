-- Argo CD health check for kiln.dev/ImageBuild.
-- Healthy: Ready=True for the current generation. Degraded: Stalled=True, or pushed over budget
-- (enforcement Warn). Suspended: spec.suspend. Progressing: anything else (building, queued,
-- waiting for the cache claim, retrying). The message is the deciding condition's message.
local hs = {}
local function cond(t)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then
      return c
    end
  end
  return nil
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: no build runs"
  return hs
end

local gen = obj.metadata.generation
local ready = cond("Ready")
local stalled = cond("Stalled")
local budget = cond("SizeBudget")

if stalled ~= nil and stalled.status == "True" and (stalled.observedGeneration == nil or stalled.observedGeneration == gen) then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local current = obj.status ~= nil and obj.status.observedGeneration == gen
if ready ~= nil and ready.status == "True" and current and (ready.observedGeneration == nil or ready.observedGeneration == gen) then
  if budget ~= nil and budget.status == "False" then
    hs.status = "Degraded"
    hs.message = "Pushed over budget: " .. (budget.message or "")
    return hs
  end
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Waiting for kiln to build the image"
end
return hs
