# Best approach for Go
FROM golang:1.21-alpine AS builder
WORKDIR /app
COPY . .

# CGO_ENABLED=0 means no C dependencies, no libc needed
RUN CGO_ENABLED=0 go build -o myapp .

FROM scratch
COPY --from=builder /app/myapp /myapp
ENTRYPOINT ["/myapp"]
