# 2. Alpine: ~15MB
FROM golang:1.21-alpine AS builder
WORKDIR /app
COPY . .
RUN go build -o myapp .

FROM alpine:3.19
COPY --from=builder /app/myapp /myapp
CMD ["./myapp"]
