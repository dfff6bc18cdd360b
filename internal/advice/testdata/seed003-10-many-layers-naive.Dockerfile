FROM alpine:3.19
RUN apk add --no-cache ca-certificates
RUN apk add --no-cache tzdata
RUN apk add --no-cache curl
RUN apk add --no-cache wget
COPY myapp /app/
WORKDIR /app
