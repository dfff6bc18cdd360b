FROM alpine:3.19

# Install build dependencies
RUN apk add --no-cache \
    gcc \
    musl-dev \
    go

# Build your app
WORKDIR /app
COPY . .
RUN go build -o myapp

# Clean up build dependencies (if not using multi-stage)
RUN apk del gcc musl-dev go

CMD ["./myapp"]
