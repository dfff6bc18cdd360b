FROM golang:1.21-alpine AS builder

# Install musl-dev for CGO
RUN apk add --no-cache gcc musl-dev

WORKDIR /app
COPY . .

# Build with CGO (dynamically linked to musl)
RUN go build -o myapp .

FROM alpine:3.19
RUN apk add --no-cache ca-certificates
COPY --from=builder /app/myapp /myapp
ENTRYPOINT ["/myapp"]
