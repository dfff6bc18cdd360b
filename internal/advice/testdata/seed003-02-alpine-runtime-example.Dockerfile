# Alpine is ~5MB vs Ubuntu ~70MB
FROM alpine:3.19

# Install packages
RUN apk add --no-cache \
    ca-certificates \
    tzdata

WORKDIR /app
COPY myapp .

CMD ["./myapp"]
