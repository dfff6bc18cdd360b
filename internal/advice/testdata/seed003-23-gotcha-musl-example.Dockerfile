# ✅ Good: Match libc or use CGO_ENABLED=0
FROM golang:1.21-alpine AS builder
RUN CGO_ENABLED=0 go build -o myapp .

FROM alpine:3.19
COPY --from=builder /go/myapp /myapp
CMD ["./myapp"]
