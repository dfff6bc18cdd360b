FROM alpine:3.19

# Combine RUN commands
RUN apk add --no-cache \
    ca-certificates \
    tzdata \
    curl \
    wget

WORKDIR /app
COPY myapp .
