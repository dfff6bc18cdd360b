# ❌ Bad: Build on Debian, run on Alpine (glibc vs musl)
FROM golang:1.21 AS builder
RUN go build -o myapp .

FROM alpine:3.19
COPY --from=builder /go/myapp /myapp
CMD ["./myapp"]
# Error: not found (looking for glibc)
