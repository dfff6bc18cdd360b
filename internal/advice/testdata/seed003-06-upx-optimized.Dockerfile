FROM golang:1.21-alpine AS builder

WORKDIR /app
COPY go.mod go.sum ./
RUN go mod download
COPY . .

# Build binary
RUN CGO_ENABLED=0 go build -ldflags="-w -s" -o myapp .

# Compress with UPX
RUN apk add --no-cache upx
RUN upx --best --lzma myapp

FROM scratch
COPY --from=builder /app/myapp /myapp
ENTRYPOINT ["/myapp"]
