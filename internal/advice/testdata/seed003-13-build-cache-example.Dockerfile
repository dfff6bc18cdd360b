FROM golang:1.21-alpine AS builder
WORKDIR /app

# Copy dependency files first (cached if unchanged)
COPY go.mod go.sum ./
RUN go mod download

# Copy source code (invalidates cache only if code changes)
COPY . .
RUN CGO_ENABLED=0 go build -o myapp .

FROM scratch
COPY --from=builder /app/myapp /myapp
ENTRYPOINT ["/myapp"]
